"""The object routes' HTTP semantics, in-process: strict ranges and If-Range, preconditions
on PUT and DELETE, the upload cap, errors in the service's shape without paths or
endpoints. (The same promises against a real ``cargohold serve``: test_real_server.py.)"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold
from cargohold.remotes import MemoryRemote
from cargohold.server import create_app
from tests.conftest import proxied_s3_url
from tests.server.test_api import AUTH, TOKEN, Client
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import SeaweedFS


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"semantics-{uuid.uuid4().hex}"
    with cargohold.open(
        f"memory://{name}",
        data_dir=tmp_path,
        signal_handlers=False,
        token=TOKEN,
        max_upload_bytes=100_000,
    ) as opened:
        yield opened
    MemoryRemote.forget(name)


@pytest.fixture
def client(hold: Hold) -> Client:
    return Client(create_app(hold), headers=AUTH)


def test_a_range_is_digits_only(client: Client, hold: Hold) -> None:
    body = bytes(range(256)) * 4
    hold.put("r.bin", body)
    for header in (
        "bytes=1_0-1_2",
        "bytes=+1-2",
        "bytes= 1-2x",
        "bytes=5-2",
    ):
        r = client.get("/api/objects/r.bin", headers={"range": header})
        assert (r.status_code, r.content) == (200, body), header  # ignored: the whole object
    arabic_digits = "bytes=\u0661-\u0662".encode()  # int() would read them as 1-2
    r = client.get("/api/objects/r.bin", headers={"range": arabic_digits})
    assert (r.status_code, r.content) == (200, body)
    r = client.get("/api/objects/r.bin", headers={"range": "bytes=10-12"})
    assert (r.status_code, r.content) == (206, body[10:13])
    assert client.get("/api/objects/r.bin", headers={"range": "bytes=-0"}).status_code == 416


def test_a_range_with_more_digits_than_python_converts_is_not_a_500(
    client: Client, hold: Hold
) -> None:
    # int() refuses strings of over 4300 digits (ValueError): a header of 5000 nines
    # fits in any server's header limit, so a client could make every GET a 500.
    body = bytes(range(256)) * 4
    hold.put("r.bin", body)
    huge = "9" * 5000
    padded = "0" * 5000 + "3"
    for header, status, content in (
        (f"bytes=0-{huge}", 206, body),  # a last byte past the end: up to the end
        (f"bytes=-{huge}", 206, body),  # a suffix longer than the object: all of it
        (f"bytes={huge}-", 416, b""),  # a first byte past the end
        (f"bytes={huge}-{huge}", 416, b""),
        (f"bytes={padded}-{padded}", 206, body[3:4]),  # leading zeros are still 3
    ):
        r = client.get("/api/objects/r.bin", headers={"range": header})
        assert (r.status_code, r.content) == (status, content), header[:20]


def test_if_range_serves_the_range_only_for_the_current_strong_etag(
    client: Client, hold: Hold
) -> None:
    body = b"0123456789" * 40_000  # streamed from a file
    with hold.syncer.paused():
        hold.put("ir.bin", body)
        local = client.get("/api/objects/ir.bin").headers["etag"]
    hold.flush(30)
    etag = client.get("/api/objects/ir.bin").headers["etag"]
    assert etag != local
    ranged = {"range": "bytes=2-5"}
    # The local etag of the same write still names these bytes once synced.
    r = client.get("/api/objects/ir.bin", headers={**ranged, "if-range": local})
    assert (r.status_code, r.content) == (206, body[2:6])
    r = client.get("/api/objects/ir.bin", headers={**ranged, "if-range": etag})
    assert (r.status_code, r.content) == (206, body[2:6])
    for stale in ('"other"', f"W/{etag}", "Mon, 07 Dec 2026 17:00:00 GMT"):
        r = client.get("/api/objects/ir.bin", headers={**ranged, "if-range": stale})
        assert (r.status_code, r.content) == (200, body), stale


def test_put_answers_201_when_it_creates_and_200_when_it_replaces(
    client: Client, hold: Hold, tmp_path: Path
) -> None:
    """RFC 9110, section 9.3.4: 201 Created only for a key that did not exist; a replace
    answers 200 with the new object's description."""
    url = "/api/objects/status/a.txt"
    created = client.request("PUT", url, content=b"one")
    assert created.status_code == 201, created.text
    replaced = client.request("PUT", url, content=b"two")
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["size"] == 3
    assert replaced.headers["etag"] == f'"{replaced.json()["etag"]}"'
    assert client.request("DELETE", url).status_code == 204
    assert client.request("PUT", url, content=b"three").status_code == 201, "deleted: created"
    # A key only the remote has (another instance wrote it; this one never saw it).
    remote_url = hold.remote.url
    with cargohold.open(remote_url, data_dir=tmp_path / "other", signal_handlers=False) as other:
        other.put("status/theirs.txt", b"theirs", durable=True)
    assert hold.local.entry("status/theirs.txt") is None
    theirs = client.request("PUT", "/api/objects/status/theirs.txt", content=b"mine")
    assert theirs.status_code == 200, theirs.text
    assert hold.get("status/theirs.txt") == b"mine"


def test_a_put_during_an_outage_answers_without_asking_the_remote(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """Whether a PUT created its key is asked of the remote (one HEAD), but not while the
    syncer backs off from a failing remote: that HEAD would wait out the remote's retries,
    and a write must answer at the local tier's speed during an outage (200: the write is
    stored, and the remote cannot say whether it existed). The proxy answers 503 to
    everything (throttling a real server cannot be made to do on demand)."""
    with FaultProxy(seaweedfs.endpoint) as proxy:
        proxy.add(Fault(status=503, times=10**9))
        url = proxied_s3_url(proxy, seaweedfs, seaweedfs_bucket)
        with cargohold.open(
            url,
            data_dir=tmp_path / "data",
            signal_handlers=False,
            token=TOKEN,
            retry_timeout=1,
            shutdown_grace=0,
        ) as hold:
            hold.put("first", b"x")
            for _ in range(600):
                if hold.remote_failing:
                    break
                time.sleep(0.05)
            assert hold.remote_failing, "the syncer never met the outage"
            client = Client(create_app(hold), headers=AUTH)
            put = client.request("PUT", "/api/objects/new.txt", content=b"new")
            assert put.status_code == 200, put.text
            # Asked of the remote: nothing (no HEAD). The syncer's own PUT of the new write
            # may have gone out meanwhile (its backoff is jittered from zero).
            asked = [r for r in proxy.requests if r[1].endswith("/new.txt") and r[0] != "PUT"]
            assert not asked, proxy.requests
            assert hold.get("new.txt") == b"new"


def test_a_put_answers_while_the_remote_has_not_said_whether_the_key_existed(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    """The first PUT of an outage (the syncer idle, so nothing says the remote fails yet),
    or one in a worker that does not sync: the HEAD that would tell 201 from 200 is held
    by the proxy until the test lets it go, and the PUT must answer meanwhile (200: the
    write is stored; the remote did not say in time whether the key existed)."""
    let_go = threading.Event()
    with FaultProxy(seaweedfs.endpoint) as proxy:
        held = Fault(
            status=None,
            times=10**9,
            release=let_go,
            match=lambda m, p: m == "HEAD" and p.endswith("/new.txt"),
        )
        proxy.add(held)
        url = proxied_s3_url(proxy, seaweedfs, seaweedfs_bucket)
        try:
            # A HEAD attempt times out after 5 s and is tried again until 12 s have gone:
            # a PUT that waited for the answer would have seen a second attempt held.
            with cargohold.open(
                url,
                data_dir=tmp_path / "data",
                signal_handlers=False,
                token=TOKEN,
                request_timeout=5,
                retry_timeout=12,
            ) as hold:
                client = Client(create_app(hold), headers=AUTH)
                put = client.request("PUT", "/api/objects/new.txt", content=b"new")
                attempts = 10**9 - held.times  # HEADs of new.txt the proxy holds
                assert attempts == 1, "the PUT waited for the remote's retries"
                assert held.taken.is_set(), "the PUT did not ask the remote"
                assert put.status_code == 200, put.text  # answered with the HEAD still held
                assert hold.get("new.txt") == b"new"
                let_go.set()
                hold.flush(60)
        finally:
            let_go.set()


def test_put_if_match_and_if_none_match(client: Client, hold: Hold) -> None:
    url = "/api/objects/p.json"
    created = client.request("PUT", url, content=b"v1", headers={**AUTH, "if-none-match": "*"})
    assert created.status_code == 201, created.text
    again = client.request("PUT", url, content=b"v2", headers={**AUTH, "if-none-match": "*"})
    assert again.status_code == 412
    assert set(again.json()) == {"error", "hint"}
    wrong = client.request("PUT", url, content=b"v2", headers={**AUTH, "if-match": '"wrong"'})
    assert wrong.status_code == 412
    weak = f'W/"{created.json()["etag"]}"'
    assert (
        client.request("PUT", url, content=b"v2", headers={**AUTH, "if-match": weak}).status_code
        == 412
    )
    assert hold.get("p.json") == b"v1"
    etag = client.get(url).headers["etag"]
    replaced = client.request("PUT", url, content=b"v2", headers={**AUTH, "if-match": etag})
    assert replaced.status_code == 200, replaced.text  # replaced, not created (RFC 9110)
    assert hold.get("p.json") == b"v2"
    # The old etag no longer holds; '*' and a list holding the current one do.
    assert (
        client.request("PUT", url, content=b"v3", headers={**AUTH, "if-match": etag}).status_code
        == 412
    )
    current = client.get(url).headers["etag"]
    listed = client.request(
        "PUT", url, content=b"v3", headers={**AUTH, "if-match": f'"nope", {current}'}
    )
    assert listed.status_code == 200
    anything = client.request("PUT", url, content=b"v4", headers={**AUTH, "if-match": "*"})
    assert anything.status_code == 200
    missing = client.request(
        "PUT", "/api/objects/none.json", content=b"x", headers={**AUTH, "if-match": "*"}
    )
    assert missing.status_code == 412
    assert client.get("/api/objects/none.json").status_code == 404
    assert hold.get("p.json") == b"v4"


def test_delete_if_match(client: Client, hold: Hold) -> None:
    hold.put("d.txt", b"keep me")
    url = "/api/objects/d.txt"
    assert client.request("DELETE", url, headers={**AUTH, "if-match": '"wrong"'}).status_code == 412
    assert client.request("DELETE", url, headers={**AUTH, "if-none-match": "*"}).status_code == 412
    assert hold.get("d.txt") == b"keep me"
    etag = client.get(url).headers["etag"]
    assert client.request("DELETE", url, headers={**AUTH, "if-match": etag}).status_code == 204
    assert client.get(url).status_code == 404
    assert client.request("DELETE", url, headers={**AUTH, "if-match": etag}).status_code == 412
    assert client.request("DELETE", url, headers={**AUTH, "if-none-match": "*"}).status_code == 204


def test_the_openapi_document_lists_the_headers(client: Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]["/api/objects/{key}"]

    def headers(method: str) -> set[str]:
        return {p["name"] for p in paths[method]["parameters"] if p["in"] == "header"}

    assert {"range", "if-range", "if-none-match"} <= headers("get")
    assert {"if-match", "if-none-match"} <= headers("put")
    assert {"if-match", "if-none-match"} <= headers("delete")
    assert {"412", "413", "507"} <= set(paths["put"]["responses"])
    assert "412" in paths["delete"]["responses"]


def test_an_upload_past_the_cap_is_413_and_stores_nothing(client: Client, hold: Hold) -> None:
    declared = client.request("PUT", "/api/objects/big", content=b"x" * 100_001, headers=AUTH)
    assert declared.status_code == 413
    assert "CARGOHOLD_MAX_UPLOAD_BYTES" in declared.json()["hint"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(30):
            yield b"y" * 10_000

    streamed = client.request("PUT", "/api/objects/big", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413
    assert set(streamed.json()) == {"error", "hint"}
    assert client.get("/api/objects/big").status_code == 404
    assert hold.status().pending_count == 0
    at_cap = client.request("PUT", "/api/objects/big", content=b"z" * 100_000, headers=AUTH)
    assert at_cap.status_code == 201
    assert hold.get("big") == b"z" * 100_000


def test_a_streamed_upload_is_stored_once_in_the_local_tier(client: Client, hold: Hold) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for n in range(9):
            yield bytes([n]) * 10_000

    r = client.request("PUT", "/api/objects/s.bin", content=chunks(), headers=AUTH)
    assert r.status_code == 201, r.text
    assert hold.get("s.bin") == b"".join(bytes([n]) * 10_000 for n in range(9))
    blobs = [p for p in (hold.local.root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1  # the body went straight into the tier's own file
    assert [p for p in (hold.local.root / "tmp").iterdir()] == []


def test_a_full_hold_is_507_in_the_service_shape(tmp_path: Path) -> None:
    name = f"full-{uuid.uuid4().hex}"
    with (
        cargohold.open(
            f"memory://{name}",
            data_dir=tmp_path,
            signal_handlers=False,
            token=TOKEN,
            max_pending_bytes=1000,
            local_max_bytes=1000,
            backpressure="raise",
        ) as hold,
        hold.syncer.paused(),
    ):
        client = Client(create_app(hold), headers=AUTH)
        hold.put("waiting", b"w" * 500)  # not synced: the next write would pass the cap
        r = client.request("PUT", "/api/objects/f", content=b"x" * 5000, headers=AUTH)
        assert r.status_code == 507
        assert set(r.json()) == {"error", "hint"}
    MemoryRemote.forget(name)


def test_422_has_the_service_shape(client: Client) -> None:
    r = client.get("/api/objects", params={"limit": 0})
    assert r.status_code == 422
    body = r.json()
    assert set(body) == {"error", "hint"}
    assert "limit" in body["error"]


def test_no_path_or_endpoint_in_responses(tmp_path: Path) -> None:
    remote = tmp_path / "volume"
    with cargohold.open(
        remote.as_uri(), data_dir=tmp_path / "data", signal_handlers=False, token=TOKEN
    ) as hold:
        client = Client(create_app(hold), headers=AUTH)
        hold.put("k", b"v")
        hold.flush(30)
        missing = client.get("/api/objects/absent.txt")
        assert missing.status_code == 404
        assert "absent.txt" in missing.json()["error"]
        stats = client.get("/api/stats")
        for text in (missing.text, stats.text, client.get("/readyz").text):
            assert str(tmp_path) not in text
        assert stats.json()["remote"] == "file://…"


def test_public_text_hides_endpoints_and_paths_but_not_a_clients_key(hold: Hold) -> None:
    from cargohold import errors
    from cargohold.server._objects import Public, public_remote

    public = Public(hold)
    shown = public.text(
        f"cannot reach http://10.0.0.5:9000/bucket: refused; see /var/lib/x.db and "
        f"{hold.local.root}/blobs/a/b (application/json, 1/2)"
    )
    assert shown == (
        "cannot reach http://<endpoint>: refused; see <path> and "
        "<data dir>/blobs/a/b (application/json, 1/2)"
    )
    bad_key = public.error(errors.InvalidKey("key '/etc/passwd' must not start with '/'"))
    assert bad_key["error"] == "key '/etc/passwd' must not start with '/'"
    assert (
        public_remote("s3://AK:SK@bucket:9000/prefix?endpoint=http://x:1") == "s3://bucket/prefix"
    )
    assert public_remote("file:///mnt/volume/app") == "file://…"


def test_a_local_etag_in_an_if_match_list_holds_once_synced(client: Client, hold: Hold) -> None:
    with hold.syncer.paused():
        hold.put("l.txt", b"v1")
        local = client.get("/api/objects/l.txt").headers["etag"]
    hold.flush(30)
    assert client.get("/api/objects/l.txt").headers["etag"] != local
    listed = client.request(
        "PUT", "/api/objects/l.txt", content=b"v2", headers={**AUTH, "if-match": f'"x", {local}'}
    )
    assert listed.status_code == 200, listed.text
    stale = client.request(
        "DELETE", "/api/objects/l.txt", headers={**AUTH, "if-match": f'"x", {local}'}
    )
    assert stale.status_code == 412
    assert hold.get("l.txt") == b"v2"


def test_head_and_get_agree_on_an_object_another_instance_wrote(hold: Hold, tmp_path: Path) -> None:
    # The first GET downloads the object into this Hold's local tier: its Last-Modified
    # must stay the remote's (what HEAD said before), not the time of the download.
    with cargohold.open(
        hold.remote.url, data_dir=tmp_path / "other", signal_handlers=False
    ) as other:
        other.put("theirs.txt", b"from another instance", durable=True)
    client = Client(create_app(hold), headers=AUTH)
    remote = hold.remote.head("theirs.txt")
    before = client.request("HEAD", "/api/objects/theirs.txt")
    got = client.get("/api/objects/theirs.txt")
    after = client.request("HEAD", "/api/objects/theirs.txt")
    assert got.content == b"from another instance"
    assert dict(before.headers) == dict(got.headers) == dict(after.headers)
    assert hold.head("theirs.txt").last_modified == remote.last_modified
    listed = client.get("/api/objects", params={"prefix": "theirs"}).json()["objects"]
    assert [datetime.fromisoformat(o["last_modified"]) for o in listed] == [remote.last_modified]


def test_if_none_match_and_if_range_together(client: Client, hold: Hold) -> None:
    body = bytes(range(256)) * 4
    hold.put("both.bin", body)
    etag = client.get("/api/objects/both.bin").headers["etag"]
    ranged = {"range": "bytes=2-5", "if-range": etag}
    # If-None-Match names this version (strongly, weakly or as *): 304, no range, no body.
    for tag in (etag, f"W/{etag}", '"other", ' + etag, "*"):
        r = client.get("/api/objects/both.bin", headers={**ranged, "if-none-match": tag})
        assert (r.status_code, r.content) == (304, b""), tag
        assert "content-range" not in r.headers
    # It names another: If-Range decides, as if it were not there.
    r = client.get("/api/objects/both.bin", headers={**ranged, "if-none-match": '"other"'})
    assert (r.status_code, r.content) == (206, body[2:6])
    stale = {**ranged, "if-range": '"other"', "if-none-match": '"other"'}
    r = client.get("/api/objects/both.bin", headers=stale)
    assert (r.status_code, r.content) == (200, body)
    # Several ranges are not served as multipart: the whole object.
    r = client.get("/api/objects/both.bin", headers={"range": "bytes=0-1,4-5"})
    assert (r.status_code, r.content) == (200, body)
