"""Who may read and write through the HTTP service, and what its responses may do in a
browser (server/_auth.py), in-process through httpx's ASGI transport. The same against a
real ``cargohold serve`` process: test_serve_security.py."""

from __future__ import annotations

import asyncio
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
from cargohold.server._auth import exposure_warning, is_passive_type, parse_bearer
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS

TOKEN = "wr1te-token"
READ = "r3ad-token"


def call(
    app: Any,
    method: str,
    url: str,
    *,
    peer: str = "127.0.0.1",
    host: str = "127.0.0.1",
    **kwargs: Any,
) -> httpx.Response:
    """One request to ``app`` from ``peer`` (the socket's address), for host ``host``."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(go())


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Any]:
    """``opened(**settings)`` opens a Hold on a fresh memory remote, closed at the end."""
    holds: list[tuple[Hold, str]] = []

    def open_one(**settings: Any) -> Hold:
        name = f"auth-{uuid.uuid4().hex}"
        hold = cargohold.open(
            f"memory://{name}",
            data_dir=tmp_path / name,
            signal_handlers=False,
            **settings,
        )
        holds.append((hold, name))
        return hold

    yield open_one
    for hold, name in holds:
        hold.close()
        MemoryRemote.forget(name)


# -- bearer credentials, as RFC 6750 says -------------------------------------------------


@pytest.mark.parametrize(
    ("values", "token"),
    [
        (["Bearer abc"], "abc"),
        (["bearer abc"], "abc"),  # the scheme is case-insensitive (RFC 9110 11.1)
        (["BEARER abc"], "abc"),
        (["Bearer    abc"], "abc"),  # 1*SP
        (["  Bearer abc  "], "abc"),  # the header's own surrounding whitespace
        (["Bearer a-b.c_d~e+f/g=="], "a-b.c_d~e+f/g=="),
        ([], None),
        (["abc"], None),  # no scheme: not bearer credentials at all
        (["Basic YTpi"], None),
        (["Bearerabc"], None),
        (["Bearer"], False),
        (["Bearer "], False),
        (["Bearer a b"], False),
        (["Bearer a,b"], False),
        (["Bearer =abc"], False),
        (["Bearer abc=d"], False),
        (["Bearer abc", "Bearer abc"], False),  # two Authorization headers
    ],
)
def test_bearer_parsing(values: list[str], token: str | bool | None) -> None:
    assert parse_bearer(values) == token


def test_writes_and_reads_need_the_token(opened: Any) -> None:
    hold = opened(token=TOKEN)
    hold.put("notes/n.txt", b"hello", content_type="text/plain")
    app = create_app(hold)
    for headers in ({}, {"authorization": TOKEN}, {"authorization": f"Basic {TOKEN}"}):
        for method, url in (
            ("GET", "/api/objects/notes/n.txt"),
            ("HEAD", "/api/objects/notes/n.txt"),
            ("GET", "/api/objects"),
            ("GET", "/api/stats"),
            ("PUT", "/api/objects/notes/n.txt"),
            ("DELETE", "/api/objects/notes/n.txt"),
        ):
            refused = call(
                app, method, url, headers=headers, content=b"x" if method == "PUT" else None
            )
            assert refused.status_code == 401, (method, url, headers)
            assert refused.headers["www-authenticate"] == 'Bearer realm="cargohold"'
    wrong = call(app, "GET", "/api/objects/notes/n.txt", headers=bearer("nope"))
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert wrong.json()["error"] == "wrong or malformed bearer token"
    malformed = call(app, "GET", "/api/stats", headers={"authorization": f"Bearer {TOKEN} x"})
    assert malformed.status_code == 401
    for scheme in ("Bearer", "bearer", "BeArEr"):
        ok = call(
            app, "GET", "/api/objects/notes/n.txt", headers={"authorization": f"{scheme} {TOKEN}"}
        )
        assert ok.status_code == 200, scheme
        assert ok.content == b"hello"
    put = call(
        app,
        "PUT",
        "/api/objects/notes/m.txt",
        content=b"m",
        headers={"authorization": f"bearer {TOKEN}"},
    )
    assert put.status_code == 201
    assert hold.get("notes/m.txt") == b"m"


def test_a_read_token_reads_and_never_writes(opened: Any) -> None:
    hold = opened(token=TOKEN, read_token=READ)
    hold.put("a.txt", b"a")
    app = create_app(hold)
    for url in ("/api/objects/a.txt", "/api/objects", "/api/stats", "/metrics", "/api/memo"):
        assert call(app, "GET", url, headers=bearer(READ)).status_code == 200, url
    for method in ("PUT", "DELETE"):
        refused = call(
            app,
            method,
            "/api/objects/a.txt",
            content=b"b" if method == "PUT" else None,
            headers=bearer(READ),
        )
        assert refused.status_code == 403
        assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert hold.get("a.txt") == b"a"
    # A read token alone: a read-only service.
    reader_only = create_app(opened(read_token=READ))
    refused = call(reader_only, "PUT", "/api/objects/x", content=b"x", headers=bearer(READ))
    assert refused.status_code == 403
    assert "set CARGOHOLD_TOKEN" in refused.json()["hint"]
    assert call(reader_only, "GET", "/api/stats").status_code == 401


def test_metrics_and_memo_need_a_token(opened: Any) -> None:
    hold = opened(token=TOKEN)
    hold.memo("sora", version="1").get_or_create(
        {"prompt": "a user's secret idea"}, lambda i, w: b"v"
    )
    app = create_app(hold)
    for url in ("/metrics", "/api/memo", "/api/memo/sora?version=1"):
        refused = call(app, "GET", url)
        assert refused.status_code == 401, url
        assert "secret idea" not in refused.text
    assert "secret idea" in call(app, "GET", "/api/memo/sora?version=1", headers=bearer(TOKEN)).text


# -- public prefixes ---------------------------------------------------------------------


def test_public_prefixes_are_read_without_a_token_and_nothing_else(opened: Any) -> None:
    hold = opened(token=TOKEN, public_prefixes=["public/", "memo/blobs/"])
    hold.put("public/logo.png", b"\x89PNG", content_type="image/png")
    hold.put("private/p.txt", b"p")
    hold.put("publicity.txt", b"not under public/")
    memo = hold.memo("sora", version="1")
    entry = memo.get_or_create({"prompt": "ana's prompt"}, lambda i, w: b"result bytes")
    # A namespace called "blobs" (refused now, but an older version made them) keeps its
    # records under memo/blobs/ too: never public.
    digest = "3f" + "0" * 62
    hold.put(f"memo/blobs/ab/3f/{digest}.json", b'{"inputs": {"prompt": "ana\'s other prompt"}}')
    with hold.scratch("req-1") as work:
        work.record["email"] = "ana@example.com"
    try:
        with hold.scratch("req-2") as work:
            work.record["email"] = "ana@example.com"
            work.save("upload.wav", b"her voice")
            raise ValueError("boom")
    except ValueError as exc:
        bundle = exc.debug_bundle  # type: ignore[attr-defined]
    app = create_app(hold)
    assert call(app, "GET", "/api/objects/public/logo.png").content == b"\x89PNG"
    assert call(app, "HEAD", "/api/objects/public/logo.png").status_code == 200
    listing = call(app, "GET", "/api/objects", params={"prefix": "public/"})
    assert [o["key"] for o in listing.json()["objects"]] == ["public/logo.png"]
    sha = entry.files[0].sha256
    blob = f"memo/blobs/{sha[:2]}/{sha}"
    assert call(app, "GET", f"/api/objects/{blob}").content == b"result bytes"
    records = [i.key for i in hold.list("memo/") if i.key.endswith(".json")]
    assert any(k.startswith("memo/blobs/") for k in records)  # the "blobs" namespace
    debug = [i.key for i in hold.list("debug/")]
    assert any(k.endswith("files/upload.wav") for k in debug)
    assert bundle
    refused = [
        "/api/objects/private/p.txt",
        "/api/objects/publicity.txt",
        "/api/objects/public%2F..%2Fprivate%2Fp.txt",  # not a key: it cannot be public
        *(f"/api/objects/{k}" for k in records + debug),
    ]
    for url in refused:
        r = call(app, "GET", url)
        assert r.status_code == 401, (url, r.status_code)
        assert b"ana" not in r.content
        assert b"voice" not in r.content
    for prefix in ("", "p", "public", "private/", "memo/", "memo/blobs/", "debug/"):
        assert call(app, "GET", "/api/objects", params={"prefix": prefix}).status_code == 401, (
            prefix
        )
    for url in ("/api/memo", "/api/memo/sora?version=1", "/api/stats"):
        assert call(app, "GET", url).status_code == 401
    assert call(app, "PUT", "/api/objects/public/x", content=b"x").status_code == 401


@pytest.mark.parametrize("mode", ["token", "local"])
def test_debug_bundles_and_memo_records_are_never_public_through_any_route(
    opened: Any, mode: str
) -> None:
    """Every GET and HEAD operation of the OpenAPI document, asked anonymously from
    another machine for each debug bundle and memo record key (in any case) and each
    prefix over them, with the widest public prefixes config allows: none serves them,
    mounted or not. Only the result file under memo/blobs/ is public."""
    from fastapi import FastAPI

    tokens = {"token": TOKEN} if mode == "token" else {}
    hold = opened(**tokens, public_prefixes=["public/", "memo/blobs/"])
    entry = hold.memo("sora", version="1").get_or_create(
        {"prompt": "ana's prompt"}, lambda i, w: b"result bytes"
    )
    # A namespace called "blobs" (refused now; an older version made them) keeps its
    # records under memo/blobs/ too.
    hold.put(f"memo/blobs/ab/3f/{'3f' * 32}.json", b'{"inputs": {"prompt": "ana\'s secret"}}')
    try:
        with hold.scratch("req-9") as work:
            work.record["email"] = "ana@example.com"
            work.save("upload.wav", b"ana's voice")
            raise ValueError("boom")
    except ValueError:
        pass
    private = [i.key for i in hold.list("debug/")] + [
        i.key for i in hold.list("memo/") if i.key.endswith(".json")
    ]
    assert any(k.startswith("memo/blobs/ab/") for k in private)  # the "blobs" namespace
    assert any(k.endswith("files/upload.wav") for k in private)
    keys = private + [k.upper() for k in private] + [k.title() for k in private]
    prefixes = ["", "debug/", "Debug/", "memo/", "MEMO/", "memo/blobs/", "memo/blobs/ab/"]
    sha = entry.files[0].sha256
    inner = create_app(hold)
    outer = FastAPI()
    outer.mount("/storage", create_app(hold))
    schema = call(inner, "GET", "/openapi.json").json()
    asked = 0
    for app, root in ((inner, ""), (outer, "/storage")):
        assert (
            call(
                app,
                "GET",
                f"{root}/api/objects/memo/blobs/{sha[:2]}/{sha}",
                peer="203.0.113.9",
                host="example.com",
            ).content
            == b"result bytes"
        )
        for path, operations in schema["paths"].items():
            if "get" not in operations:
                continue
            urls = [path]
            if "{key}" in path:
                urls = [path.replace("{key}", key) for key in keys]
            elif "{namespace}" in path:
                urls = [path.replace("{namespace}", ns) for ns in ("sora", "blobs", "Blobs")]
            for url in urls:
                params = (
                    [{"prefix": prefix} for prefix in prefixes] if path == "/api/objects" else [{}]
                )
                for query in params:
                    for method in ("GET", "HEAD"):
                        r = call(
                            app,
                            method,
                            root + url,
                            params=query,
                            peer="203.0.113.9",
                            host="example.com",
                        )
                        asked += 1
                        if operations["get"]["security"] == []:
                            continue  # health, auth: no object in them
                        assert r.status_code in (401, 403), (method, url, query, r.status_code)
                        assert b"ana" not in r.content, (method, url, query)
    assert asked > 100


# -- local mode: no token configured -----------------------------------------------------


def test_local_mode_lets_only_this_machine_read_and_nobody_write(opened: Any) -> None:
    hold = opened(public_prefixes=["public/"])
    hold.put("secret.txt", b"s")
    hold.put("public/p.txt", b"p")
    app = create_app(hold)
    assert call(app, "GET", "/api/objects/secret.txt").content == b"s"
    assert (
        call(app, "GET", "/api/objects/secret.txt", peer="::1", host="[::1]:8000").status_code
        == 200
    )
    assert call(app, "GET", "/api/objects/secret.txt", host="localhost:8000").status_code == 200
    not_local = [
        {"peer": "203.0.113.5"},  # another machine
        {"peer": "10.0.0.2", "host": "127.0.0.1"},
        {"headers": {"x-forwarded-for": "203.0.113.5"}},  # a proxy on this machine
        {"headers": {"forwarded": "for=203.0.113.5"}},
        {"headers": {"x-real-ip": "203.0.113.5"}},
        # Proxies that name no client: Via is the one header RFC 9110 makes every proxy
        # send (Squid, Apache, Varnish); a TLS terminator may add only X-Forwarded-Proto.
        {"headers": {"via": "1.1 squid"}},
        {"headers": {"x-forwarded-proto": "https"}},
        {"headers": {"x-original-forwarded-for": "203.0.113.5"}},
        {"host": "attacker.example"},  # DNS rebinding: a page whose name points at 127.0.0.1
    ]
    for how in not_local:
        refused = call(app, "GET", "/api/objects/secret.txt", **how)
        assert refused.status_code == 403, how
        assert "local mode" in refused.json()["error"]
        assert call(app, "GET", "/api/objects/public/p.txt", **how).content == b"p"
        assert call(app, "GET", "/api/stats", **how).status_code == 403
    # Nobody writes, local or not, token or not.
    for headers in ({}, bearer("anything")):
        refused = call(app, "PUT", "/api/objects/x", content=b"x", headers=headers)
        assert refused.status_code == 403
        assert "set CARGOHOLD_TOKEN" in refused.json()["hint"]
    # A token where none is configured is wrong, even from this machine.
    wrong = call(app, "GET", "/api/objects/secret.txt", headers=bearer("anything"))
    assert wrong.status_code == 401
    assert "local mode" in wrong.json()["hint"]


def test_auth_route_says_the_mode_and_the_callers_access(opened: Any) -> None:
    local = create_app(opened(public_prefixes=["public/"]))
    here = call(local, "GET", "/api/auth").json()
    assert here["mode"] == "local"
    assert here["access"] == "read"
    assert here["writes"] is False
    assert here["public_prefixes"] == ["public/"]
    assert call(local, "GET", "/api/auth", peer="203.0.113.5").json()["access"] == "none"
    app = create_app(opened(token=TOKEN, read_token=READ))
    assert call(app, "GET", "/api/auth").json()["access"] == "none"
    assert call(app, "GET", "/api/auth", headers=bearer(READ)).json()["access"] == "read"
    said = call(app, "GET", "/api/auth", headers=bearer(TOKEN)).json()
    assert (said["mode"], said["access"], said["writes"]) == ("token", "write", True)


def test_readyz_is_public_and_tells_its_problems_to_readers_only(opened: Any) -> None:
    hold = opened(token=TOKEN, ready_max_loss_window=0)
    app = create_app(hold)
    assert call(app, "GET", "/healthz").status_code == 200
    with hold.syncer.paused():
        hold.put("stuck", b"x")
        anonymous = call(app, "GET", "/readyz")
        reader = call(app, "GET", "/readyz", headers=bearer(TOKEN))
    assert anonymous.status_code == reader.status_code == 503
    assert anonymous.json()["problems"] == ["1 problem(s), told to readers only"]
    assert "oldest unsynced write" in reader.json()["problems"][0]


def test_every_route_of_the_schema_refuses_an_anonymous_caller(opened: Any) -> None:
    """Each operation of the OpenAPI document, without a token: 401 unless the document
    itself says it is public (security: [])."""
    hold = opened(token=TOKEN)
    hold.put("notes/n.txt", b"n")
    app = create_app(hold)
    schema = call(app, "GET", "/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    public = set()
    checked = 0
    for path, operations in schema["paths"].items():
        url = path.replace("{key}", "notes/n.txt").replace("{namespace}", "sora")
        for method, operation in operations.items():
            r = call(app, method.upper(), url, content=b"x" if method == "put" else None)
            if operation["security"] == []:
                public.add(path)
                assert r.status_code == 200, (method, path)
            else:
                assert r.status_code == 401, (method, path, r.status_code)
                assert "401" in operation["responses"]
                checked += 1
    assert public == {"/healthz", "/readyz", "/api/auth"}
    assert checked >= 8
    assert hold.get("notes/n.txt") == b"n"  # the anonymous PUT and DELETE changed nothing


# -- what responses may do in a browser ---------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "passive"),
    [
        ("image/png", True),
        ("video/mp4", True),
        ("audio/wav", True),
        ("text/plain; charset=utf-8", True),
        ("application/json", True),
        (None, True),
        ("text/html", False),
        ("TEXT/HTML; charset=utf-8", False),
        ("application/xhtml+xml", False),
        ("image/svg+xml", False),
        ("text/xml", False),
        ("application/xml", False),
        ("text/javascript", False),
        ("application/javascript", False),
        ("application/pdf", False),
        ("text/x-anything-new", False),
        ("multipart/x-mixed-replace", False),
        ("image/png, text/html", False),  # a browser takes the last type of a list
        ("text/plain,text/html", False),
    ],
)
def test_passive_types(content_type: str | None, passive: bool) -> None:
    assert is_passive_type(content_type) is passive


XSS = b"<script>document.title='pwned'</script><svg onload=alert(1)></svg>"


def test_uploaded_html_and_svg_never_render_on_the_service_origin(opened: Any) -> None:
    hold = opened(token=TOKEN)
    app = create_app(hold)
    auth = bearer(TOKEN)
    uploads = {
        "probe.bin": "text/html",  # an HTML type on any key
        "probe.html": None,  # a .html key, its type guessed
        "probe.svg": "image/svg+xml",
        "probe.js": "application/javascript",
        "probe.xml": "text/xml",
    }
    for key, content_type in uploads.items():
        headers = {**auth, **({"content-type": content_type} if content_type else {})}
        assert (
            call(app, "PUT", f"/api/objects/{key}", content=XSS, headers=headers).status_code == 201
        )
        for method in ("GET", "HEAD"):
            r = call(app, method, f"/api/objects/{key}", headers=auth)
            assert r.status_code == 200
            assert r.headers["content-disposition"] == "attachment", key
            assert r.headers["content-security-policy"] == "sandbox", key
            assert r.headers["x-content-type-options"] == "nosniff"
        ranged = call(app, "GET", f"/api/objects/{key}", headers={**auth, "range": "bytes=0-7"})
        assert ranged.status_code == 206
        assert ranged.headers["content-disposition"] == "attachment"
    hold.put("pic.png", b"\x89PNG", content_type="image/png")
    image = call(app, "GET", "/api/objects/pic.png", headers=auth)
    assert "content-disposition" not in image.headers  # shown inline (previews, <img>)
    assert image.headers["content-security-policy"] == "sandbox"


def test_a_content_type_list_from_another_s3_writer_is_an_attachment(
    tmp_path: Path, seaweedfs: SeaweedFS, seaweedfs_bucket: str
) -> None:
    # Hold.put refuses such a type, but another tool may write the bucket. A browser takes
    # the last type of a list (Fetch's "extract a MIME type"): "image/png, text/html" is
    # HTML to it, though it starts like an image.
    url = s3_url(seaweedfs, seaweedfs_bucket)
    prefix = url.split("?", 1)[0].split("/", 3)[3]
    s3: Any = seaweedfs.client()
    with cargohold.open(url, data_dir=tmp_path, signal_handlers=False, token=TOKEN) as hold:
        app = create_app(hold)
        for n, content_type in enumerate(("image/png, text/html", "image/png,text/html")):
            s3.put_object(
                Bucket=seaweedfs_bucket,
                Key=f"{prefix}/probe-{n}",
                Body=XSS,
                ContentType=content_type,
            )
            for method in ("GET", "HEAD"):
                r = call(app, method, f"/api/objects/probe-{n}", headers=bearer(TOKEN))
                assert r.status_code == 200
                assert r.headers["content-disposition"] == "attachment", (content_type, method)


def test_every_response_says_nosniff_and_the_dashboard_has_a_strict_csp(opened: Any) -> None:
    app = create_app(opened(token=TOKEN))
    for url in ("/", "/static/app.js", "/api/stats", "/healthz", "/openapi.json", "/nothing"):
        for headers in ({}, bearer(TOKEN)):
            r = call(app, "GET", url, headers=headers)
            assert r.headers["x-content-type-options"] == "nosniff", url
    page = call(app, "GET", "/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    api = call(app, "GET", "/api/stats", headers=bearer(TOKEN))
    assert api.headers["content-security-policy"].startswith("sandbox")


def test_no_response_refers_to_another_origin(opened: Any) -> None:
    """No page of the service loads anything from elsewhere: there is no /docs or /redoc
    (FastAPI's load their scripts from a CDN), and neither the dashboard, its static
    files, the OpenAPI document nor any GET route names an outside origin."""
    import re
    from importlib.resources import files

    hold = opened(token=TOKEN)
    hold.put("notes/n.txt", b"n", content_type="text/plain")
    hold.memo("sora", version="1").get_or_create({"prompt": "a cat"}, lambda i, w: b"x")
    app = create_app(hold)
    for gone in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        r = call(app, "GET", gone, headers=bearer(TOKEN))
        assert r.status_code == 404, gone
        assert r.headers["content-security-policy"].startswith("sandbox"), gone
    static = files("cargohold.server").joinpath("static")
    urls = ["/", *(f"/static/{f.name}" for f in static.iterdir() if f.is_file())]
    schema = call(app, "GET", "/openapi.json").json()
    for path, operations in schema["paths"].items():
        if "get" in operations:
            urls.append(path.replace("{key}", "notes/n.txt").replace("{namespace}", "sora"))
    outside = re.compile(
        rb"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}|(?:src|href|url)\s*[=(]\s*["']?//""",
        re.IGNORECASE,
    )
    svg_namespace = b"http://www.w3.org/2000/svg"  # a name in createElementNS, never fetched
    assert len(urls) > 10
    for url in ["/openapi.json", *urls]:
        r = call(app, "GET", url, headers=bearer(TOKEN))
        assert r.status_code == 200, (url, r.status_code)
        found = outside.findall(r.content.replace(svg_namespace, b""))
        assert found == [], (url, found)


def test_mounted_under_a_prefix_the_gate_still_holds(opened: Any) -> None:
    from fastapi import FastAPI

    hold = opened(token=TOKEN, public_prefixes=["public/"])
    hold.put("public/a.txt", b"a")
    hold.put("private/b.txt", b"b")
    outer = FastAPI()
    outer.mount("/storage", create_app(hold))
    assert call(outer, "GET", "/storage/api/objects/public/a.txt").content == b"a"
    assert call(outer, "GET", "/storage/api/objects/private/b.txt").status_code == 401
    assert (
        call(outer, "GET", "/storage/api/objects/private/b.txt", headers=bearer(TOKEN)).content
        == b"b"
    )
    assert "content-security-policy" in call(outer, "GET", "/storage/").headers


def test_a_websocket_route_added_later_is_behind_the_gate(opened: Any) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket, WebSocketDisconnect

    app = create_app(opened(token=TOKEN))

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app.router.add_websocket_route("/ws", echo)
    with TestClient(app) as client:
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/ws"):
            pass
        assert refused.value.code == 1008
        with client.websocket_connect("/ws", headers=bearer(TOKEN)) as ws:
            assert ws.receive_text() == "hello"


# -- cargohold serve's warning -------------------------------------------------------------


def test_exposure_warning() -> None:
    from cargohold import Settings

    none = Settings.load({})
    for host in ("0.0.0.0", "::", "192.0.2.1", "myhost.example"):
        warning = exposure_warning(host, none)
        assert warning is not None
        assert warning.startswith("WARNING")
        assert "CARGOHOLD_TOKEN" in warning
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        said = exposure_warning(host, none)
        assert said is not None
        assert said.startswith("local mode")
    for settings in (Settings.load({}, token="t"), Settings.load({}, read_token="r")):
        assert exposure_warning("0.0.0.0", settings) is None
