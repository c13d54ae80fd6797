"""Every route of the HTTP service, in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import cargohold
from cargohold import Hold
from cargohold.remotes import MemoryRemote
from cargohold.server import create_app
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS

TOKEN = "s3cret-token"


class Client:
    """A synchronous face on httpx.AsyncClient + ASGITransport (one event loop per call).

    Its requests come from 127.0.0.1 to host 127.0.0.1: a client on the service's machine,
    which reads without a token when none is configured (local mode). ``headers`` go with
    every request (the token, for a Hold that has one)."""

    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = headers or {}

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", headers=self.headers
            ) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"server-{uuid.uuid4().hex}"
    with cargohold.open(
        f"memory://{name}", data_dir=tmp_path, signal_handlers=False, token=TOKEN
    ) as opened:
        yield opened
    MemoryRemote.forget(name)


AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(hold: Hold) -> Client:
    return Client(create_app(hold), headers=AUTH)


def test_put_get_head_delete(client: Client, hold: Hold) -> None:
    put = client.request(
        "PUT",
        "/api/objects/videos/a.mp4",
        content=b"movie bytes",
        headers={**AUTH, "content-type": "video/mp4", "x-cargohold-meta-prompt": "a cat"},
    )
    assert put.status_code == 201, put.text
    assert put.json()["size"] == 11
    assert hold.head("videos/a.mp4").metadata == {"prompt": "a cat"}
    got = client.get("/api/objects/videos/a.mp4")
    assert got.status_code == 200
    assert got.content == b"movie bytes"
    assert got.headers["content-type"] == "video/mp4"
    assert got.headers["accept-ranges"] == "bytes"
    head = client.request("HEAD", "/api/objects/videos/a.mp4")
    assert head.status_code == 200
    assert head.headers["content-length"] == "11"
    assert head.content == b""
    assert client.request("DELETE", "/api/objects/videos/a.mp4", headers=AUTH).status_code == 204
    missing = client.get("/api/objects/videos/a.mp4")
    assert missing.status_code == 404
    assert "videos/a.mp4" in missing.json()["error"]


def test_ranges(client: Client, hold: Hold) -> None:
    data = bytes(range(256)) * 2048  # 512 KiB: served from a file, streamed
    hold.put("big.bin", data)
    small = b"0123456789"
    hold.put("small.txt", small)
    for key, body in (("big.bin", data), ("small.txt", small)):
        r = client.get(f"/api/objects/{key}", headers={"range": "bytes=2-5"})
        assert r.status_code == 206
        assert r.content == body[2:6]
        assert r.headers["content-range"] == f"bytes 2-5/{len(body)}"
        assert client.get(f"/api/objects/{key}", headers={"range": "bytes=-3"}).content == body[-3:]
        assert client.get(f"/api/objects/{key}", headers={"range": "bytes=7-"}).content == body[7:]
        past = client.get(f"/api/objects/{key}", headers={"range": f"bytes={len(body)}-"})
        assert past.status_code == 416
        assert past.headers["content-range"] == f"bytes */{len(body)}"
    assert client.get("/api/objects/big.bin").content == data


def test_a_local_etag_stays_valid_once_the_write_is_synced(client: Client, hold: Hold) -> None:
    with hold.syncer.paused():
        hold.put("draft.txt", b"v1")
        local = client.get("/api/objects/draft.txt").headers["etag"]
        assert local.startswith('"L')  # not on the remote yet: a local etag
    hold.flush(30)
    synced = client.get("/api/objects/draft.txt").headers["etag"]
    assert synced != local  # the remote's etag now
    assert client.get("/api/objects/draft.txt", headers={"if-none-match": local}).status_code == 304
    hold.put("draft.txt", b"v2")
    assert client.get("/api/objects/draft.txt", headers={"if-none-match": local}).status_code == 200


def test_etags_and_304(client: Client, hold: Hold) -> None:
    hold.put("doc.json", b"{}")
    first = client.get("/api/objects/doc.json")
    etag = first.headers["etag"]
    assert etag.startswith('"')
    again = client.get("/api/objects/doc.json", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    hold.put("doc.json", b'{"changed": true}')
    assert client.get("/api/objects/doc.json", headers={"if-none-match": etag}).status_code == 200


def test_writes_need_the_token(hold: Hold) -> None:
    client = Client(create_app(hold))
    assert client.request("PUT", "/api/objects/x", content=b"1").status_code == 401
    wrong = client.request(
        "PUT", "/api/objects/x", content=b"1", headers={"authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert "CARGOHOLD_TOKEN" in wrong.json()["hint"]
    assert client.request("DELETE", "/api/objects/x").status_code == 401


def test_without_a_token_writes_are_refused_not_open(tmp_path: Path) -> None:
    with cargohold.open("memory://no-token", data_dir=tmp_path, signal_handlers=False) as hold:
        client = Client(create_app(hold))
        refused = client.request(
            "PUT", "/api/objects/x", content=b"1", headers={"authorization": "Bearer anything"}
        )
        assert refused.status_code == 403
        assert "set CARGOHOLD_TOKEN" in refused.json()["hint"]
        assert client.get("/api/objects/x").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/objects/..%2F..%2Fetc%2Fpasswd",
        "/api/objects/a/../../etc/passwd",
        "/api/objects/%2Fetc%2Fpasswd",
        "/api/objects/a%5Cb",
        "/api/objects/.cargohold/leases/x",
        "/api/objects/a%00b",
        "/api/objects/a%0Ab",  # a newline: the router cannot match it, the key rules judge it
    ],
)
def test_traversal_attempts_are_400(client: Client, path: str) -> None:
    for method in ("GET", "PUT", "DELETE"):
        r = client.request(method, path, content=b"x" if method == "PUT" else None, headers=AUTH)
        if ".." in path.split("/"):  # the client resolves dot segments: '/etc/passwd' is asked
            assert r.status_code == 404
            continue
        assert r.status_code == 400, (method, path, r.status_code, r.text)
        assert r.json()["error"], "the body names the rule the key broke"


def test_framework_errors_have_the_documented_body(client: Client) -> None:
    r = client.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"error": "Not Found", "hint": None}
    r = client.request("POST", "/api/objects/a")
    assert r.status_code == 405
    assert r.json()["error"] == "Method Not Allowed"


def test_framework_errors_judge_keys_below_the_root_path_only(hold: Hold) -> None:
    """Served under a root path (uvicorn --root-path, a proxy's prefix), a key the router
    cannot match is judged by the key rules (400) when the request is inside the root
    path; a path that merely starts with the same letters is not inside it."""

    def ask(root_path: str, path: str) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=create_app(hold), root_path=root_path)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", headers=AUTH
            ) as client:
                return await client.get(path)

        return asyncio.run(go())

    inside = ask("/storage", "/storage/api/objects/a%0Ab")
    assert inside.status_code == 400, inside.text
    assert "control character" in inside.json()["error"]
    # "/a" is not a folder of "/api/...": the router sees /api/objects/a\nb, so does the
    # handler (before, it cut "/a" off and answered a plain 404).
    beside = ask("/a", "/api/objects/a%0Ab")
    assert beside.status_code == 400, beside.text
    assert "control character" in beside.json()["error"]
    outside = ask("/storage", "/storagex/api/objects/a%0Ab")
    assert (outside.status_code, outside.json()) == (404, {"error": "Not Found", "hint": None})


def test_listing_pages(client: Client, hold: Hold) -> None:
    for i in range(25):
        hold.put(f"p/{i:02d}", b"x")
    hold.put("q/other", b"y")
    first = client.get("/api/objects", params={"prefix": "p/", "limit": 10}).json()
    assert [o["key"] for o in first["objects"]] == [f"p/{i:02d}" for i in range(10)]
    seen = [o["key"] for o in first["objects"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get(
            "/api/objects", params={"prefix": "p/", "limit": 10, "cursor": cursor}
        ).json()
        seen += [o["key"] for o in page["objects"]]
        cursor = page["next_cursor"]
    assert seen == [f"p/{i:02d}" for i in range(25)]
    assert client.get("/api/objects", params={"prefix": "../"}).status_code == 400


def test_listing_pages_on_seaweedfs_show_every_key_once(
    tmp_path: Path, seaweedfs: SeaweedFS, seaweedfs_bucket: str
) -> None:
    """SeaweedFS lists a folder's keys before a sibling that sorts first in bytes (``a/b``
    before ``a-c``): paging by the cursor's place in the listing still shows each key once,
    and so does a page whose cursor key was deleted meanwhile."""
    keys = ["a/b", "a/c", "a-c", "a.txt", "ab", "b"]
    with cargohold.open(
        s3_url(seaweedfs, seaweedfs_bucket), data_dir=tmp_path, signal_handlers=False
    ) as hold:
        for key in keys:
            hold.put(key, b"x")
        hold.flush(60)
        client = Client(create_app(hold))

        def pages(limit: int, *, delete_cursor: bool = False, prefix: str = "") -> list[str]:
            seen: list[str] = []
            cursor = None
            while True:
                params = {
                    "limit": limit,
                    "prefix": prefix,
                    **({"cursor": cursor} if cursor else {}),
                }
                page = client.get("/api/objects", params=params).json()
                seen += [o["key"] for o in page["objects"]]
                cursor = page["next_cursor"]
                if not cursor:
                    return seen
                if delete_cursor:
                    hold.delete(cursor)
                    hold.flush(60)
                    delete_cursor = False

        for limit in (1, 2, 4):
            shown = pages(limit)
            assert sorted(shown) == sorted(keys), f"limit {limit}: {shown}"
        for limit in (1, 2):  # a/b (then a/c) deleted after the first page: no key lost
            shown = pages(limit, delete_cursor=True)
            assert set(shown) == set(keys), shown
            hold.put(shown[limit - 1], b"x")  # back for the next round
            hold.flush(60)
        # What is left after the deletion happens to be in byte order as well.
        for key in ("z/a/b", "z/a-c", "z/b"):
            hold.put(key, b"x")
        hold.flush(60)
        assert set(pages(1, delete_cursor=True, prefix="z/")) == {"z/a/b", "z/a-c", "z/b"}


def test_memo_routes_link_to_files(client: Client, hold: Hold) -> None:
    memo = hold.memo("sora", version="v2")

    def video(inputs: dict[str, Any], workdir: Path) -> Path:
        (workdir / "take.mp4").write_bytes(b"mp4:" + inputs["prompt"].encode())
        return workdir / "take.mp4"

    memo.get_or_create({"prompt": "a cat"}, video)
    memo.get_or_create({"prompt": "a dog"}, video)
    assert client.get("/api/memo").json() == [
        {
            "namespace": "sora",
            "version": "v2",
            "entries": 2,
            "bytes": len(b"mp4:a cat") + len(b"mp4:a dog"),
        }
    ]
    entries = client.get("/api/memo/sora", params={"version": "v2"}).json()
    assert [e["inputs"]["prompt"] for e in entries] == ["a dog", "a cat"]
    link = entries[1]["files"][0]["url"]
    assert entries[1]["files"][0]["content_type"] == "video/mp4"
    assert client.get(link).content == b"mp4:a cat"
    assert client.get("/api/memo/bad%2Fname").status_code in (400, 404)


def test_memo_file_links_are_paths_not_the_requests_scheme_and_host(hold: Hold) -> None:
    # Behind a TLS-terminating proxy (Spaces, Fly, Render...) the service hears plain http
    # for whatever Host the client sent: a link built from them is http:// on an https
    # dashboard (blocked by its own CSP, connect-src 'self') and echoes the Host header.
    from fastapi import FastAPI

    memo = hold.memo("sora", version="v1")
    memo.get_or_create({"prompt": "a cat"}, lambda inputs, workdir: b"cat bytes")
    outer = FastAPI()
    outer.mount("/storage", create_app(hold))
    client = Client(outer, headers=AUTH)
    entries = client.get(
        "/storage/api/memo/sora", params={"version": "v1"}, headers={"host": "proxy.internal:8080"}
    ).json()
    link = entries[0]["files"][0]["url"]
    assert link.startswith("/storage/api/objects/memo/blobs/"), link
    assert client.get(link).content == b"cat bytes"


def test_stats_metrics_health(client: Client, hold: Hold) -> None:
    hold.put("k", b"v")
    hold.get("k")
    stats = client.get("/api/stats").json()
    assert stats["remote"].startswith("memory://")
    assert stats["reads"] == 1
    assert {"pending_count", "loss_window", "throughput", "errors", "local_bytes"} <= set(stats)
    assert stats["remote_size"] is None  # known only through a catalog (tests/catalog)
    metrics = client.get("/metrics").text
    assert "# TYPE cargohold_pending_writes gauge" in metrics
    assert "cargohold_hit_ratio 1" in metrics
    assert client.get("/healthz").json() == {"ok": True, "problems": []}
    hold.flush(30)
    assert client.get("/readyz").status_code == 200


def test_readyz_fails_past_the_loss_window(tmp_path: Path) -> None:
    with (
        cargohold.open(
            "memory://unready", data_dir=tmp_path, signal_handlers=False, ready_max_loss_window=0
        ) as hold,
        hold.syncer.paused(),
    ):
        hold.put("stuck", b"x")
        ready = Client(create_app(hold)).get("/readyz")
        assert ready.status_code == 503
        assert "oldest unsynced write" in ready.json()["problems"][0]


def test_openapi_and_dashboard(client: Client) -> None:
    schema = client.get("/openapi.json").json()
    assert "/api/objects/{key}" in schema["paths"]
    page = client.get("/")
    assert page.status_code == 200
    assert "Pending writes" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_mounted_under_a_prefix(hold: Hold) -> None:
    """Mounted into another FastAPI app (as in a Gradio or FastAPI app): routes, the
    dashboard and its relative links all work under the prefix."""
    from fastapi import FastAPI

    outer = FastAPI()
    outer.mount("/storage", create_app(hold))
    client = Client(outer, headers=AUTH)
    hold.put("notes/n.txt", b"hello", content_type="text/plain")
    assert client.get("/storage/api/objects/notes/n.txt").content == b"hello"
    listing = client.get("/storage/api/objects", params={"prefix": "notes/"}).json()
    assert [o["key"] for o in listing["objects"]] == ["notes/n.txt"]
    page = client.get("/storage/")
    assert page.status_code == 200
    # The page's assets are linked relative to it, so they resolve under the prefix.
    for asset in re.findall(r'(?:src|href)="(static/[^"]+)"', page.text):
        assert client.get("/storage/" + asset).status_code == 200, asset
    # (A key with a newline never gets past the host app's own Mount pattern: its 404.)
    assert client.get("/storage/api/objects/..%2Fx").status_code == 400
