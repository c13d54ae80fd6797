"""The service's privacy and browser safety against a real ``cargohold serve`` process on
loopback (started, then stopped by its PID): every route of its OpenAPI document without a
token, RFC 6750 credentials, an XSS probe, public prefixes, and local mode."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testsupport.children import dying_with_parent
from testsupport.servers import free_port

TOKEN = "real-wr1te-token"
READ = "real-r3ad-token"


@contextlib.contextmanager
def serve(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[tuple[str, str]]:
    """``cargohold serve`` on a free loopback port; yields its base URL and, once it has
    stopped, leaves its output readable through the second item's file."""
    port = free_port()
    out = tmp_path / "serve.out"
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CARGOHOLD_TOKEN", "CARGOHOLD_READ_TOKEN", "CARGOHOLD_PUBLIC_PREFIXES")
    }
    environ.update(
        {
            "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
            "CARGOHOLD_REMOTE": (tmp_path / "remote").as_uri(),
            "COLUMNS": "400",
            **env,
        }
    )
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            dying_with_parent(
                [sys.executable, "-m", "cargohold", "serve", "--port", str(port), *args]
            ),
            env=environ,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "serve never answered /healthz"
            time.sleep(0.1)
        yield base, str(out)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


XSS = b"<html><script>document.title='pwned'</script><svg onload=alert(1)></svg></html>"


@pytest.fixture
def private(tmp_path: Path) -> Iterator[str]:
    env = {"CARGOHOLD_TOKEN": TOKEN, "CARGOHOLD_READ_TOKEN": READ}
    with serve(tmp_path, env, "--public-prefix", "public/") as (base, _):
        yield base


def test_every_route_of_the_schema_needs_a_token(private: str) -> None:
    base = private
    put = httpx.put(f"{base}/api/objects/notes/n.txt", content=b"n", headers=bearer(TOKEN))
    assert put.status_code == 201
    schema = httpx.get(f"{base}/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    operations = 0
    for path, methods in schema["paths"].items():
        url = base + path.replace("{key}", "notes/n.txt").replace("{namespace}", "sora")
        for method, operation in methods.items():
            body = b"x" if method == "put" else None
            anonymous = httpx.request(method.upper(), url, content=body)
            if operation["security"] == []:
                assert path in ("/healthz", "/readyz", "/api/auth"), path
                assert anonymous.status_code == 200, path
                continue
            operations += 1
            assert anonymous.status_code == 401, (method, path, anonymous.status_code)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            assert anonymous.headers["x-content-type-options"] == "nosniff"
            # No scheme at all: not credentials (this used to be accepted).
            bare = httpx.request(
                method.upper(), url, content=body, headers={"authorization": TOKEN}
            )
            assert bare.status_code == 401, (method, path)
            if method == "get":
                lower = httpx.get(url, headers={"authorization": f"bearer {TOKEN}"})
                assert lower.status_code == 200, (path, lower.text)  # RFC 6750: any case
                assert httpx.get(url, headers=bearer(READ)).status_code == 200, path
    assert operations >= 8
    assert httpx.get(f"{base}/api/objects/notes/n.txt", headers=bearer(READ)).content == b"n"
    refused = httpx.delete(f"{base}/api/objects/notes/n.txt", headers=bearer(READ))
    assert refused.status_code == 403
    assert httpx.get(f"{base}/metrics").status_code == 401


def test_an_xss_probe_never_runs_on_the_service_origin(private: str) -> None:
    base = private
    auth = bearer(TOKEN)
    for key, content_type in (
        ("probe/page", "text/html"),
        ("probe/page.html", None),
        ("probe/pic.svg", "image/svg+xml"),
        ("public/page.html", "text/html; charset=utf-8"),
    ):
        headers = {**auth, **({"content-type": content_type} if content_type else {})}
        assert (
            httpx.put(f"{base}/api/objects/{key}", content=XSS, headers=headers).status_code == 201
        )
        served = httpx.get(f"{base}/api/objects/{key}", headers=auth)
        assert served.content == XSS  # the bytes are kept as they are ...
        assert served.headers["content-disposition"] == "attachment", key  # ... never rendered
        assert served.headers["content-security-policy"] == "sandbox"
        assert served.headers["x-content-type-options"] == "nosniff"
    anyone = httpx.get(f"{base}/api/objects/public/page.html")
    assert anyone.status_code == 200
    assert anyone.headers["content-disposition"] == "attachment"
    page = httpx.get(f"{base}/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_public_prefixes_and_nothing_else_without_a_token(private: str) -> None:
    base = private
    auth = bearer(TOKEN)
    record = b'{"email": "ana@example.com"}'
    for key, data in (
        ("public/a.txt", b"a"),
        ("private/b.txt", b"b"),
        ("debug/2026-01-01/req-1/record.json", record),
        ("memo/sora/1/ab/" + "ab" * 32 + ".json", record),
    ):
        assert httpx.put(f"{base}/api/objects/{key}", content=data, headers=auth).status_code == 201
        said = httpx.get(f"{base}/api/objects/{key}")
        if key.startswith("public/"):
            assert said.content == data
        else:
            assert said.status_code == 401, key
            assert b"ana@" not in said.content
    listing = httpx.get(f"{base}/api/objects", params={"prefix": "public/"}).json()
    assert [o["key"] for o in listing["objects"]] == ["public/a.txt"]
    assert httpx.get(f"{base}/api/objects").status_code == 401
    assert httpx.get(f"{base}/api/objects", params={"prefix": "debug/"}).status_code == 401


def test_local_mode_on_loopback(tmp_path: Path) -> None:
    with serve(tmp_path, {}) as (base, out):
        assert httpx.put(f"{base}/api/objects/a.txt", content=b"a").status_code == 403
        assert httpx.get(f"{base}/api/auth").json()["mode"] == "local"
        assert httpx.get(f"{base}/api/objects/a.txt").status_code == 404  # read, not found
        assert httpx.get(f"{base}/api/stats").status_code == 200
        proxied = httpx.get(f"{base}/api/stats", headers={"x-forwarded-for": "203.0.113.9"})
        assert proxied.status_code == 403
        rebound = httpx.get(f"{base}/api/stats", headers={"host": "attacker.example"})
        assert rebound.status_code == 403
    assert "local mode (no CARGOHOLD_TOKEN)" in Path(out).read_text()
