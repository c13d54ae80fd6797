"""The dashboard in headless Chromium (Debian's, driven by Playwright; no browser download)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import cargohold
from cargohold import Hold
from cargohold.remotes import MemoryRemote
from cargohold.server import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Hold]]:
    """The service for a Hold, on a free loopback port, in a thread of this process.
    Indirect parameters are the Hold's settings (none: local mode)."""
    name = f"dashboard-{uuid.uuid4().hex}"
    settings: dict[str, Any] = getattr(request, "param", {})
    hold = cargohold.open(f"memory://{name}", data_dir=tmp_path, signal_handlers=False, **settings)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(hold), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", hold
    finally:
        server.should_exit = True
        thread.join(30)
        hold.close(timeout=0)
        MemoryRemote.forget(name)


def in_chromium(url: str, look: Callable[[Any], None]) -> list[str]:
    """Open ``url`` in headless Chromium on a phone-sized page, run ``look(page)``, and
    return the console errors and page errors seen (a CSP violation is one)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: ./dev test installs it (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844})  # a phone
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(url)
            look(page)
        finally:
            browser.close()
    return problems


def test_the_dashboard_shows_pending_writes_and_memo_entries(served: tuple[str, Hold]) -> None:
    url, hold = served
    memo = hold.memo("thumbnails", version="v1")
    memo.get_or_create(
        {"prompt": "a red square"}, lambda inputs, work: {"color": "red", "size": 64}
    )
    hold.flush(30)
    with hold.syncer.paused():
        for i in range(3):
            hold.put(f"pending/{i}.json", b"{}")
        # A refusal as the syncer records one (the refusal itself: tests/hold/test_refused.py).
        version = hold.local.entry("pending/0.json").version  # type: ignore[union-attr]
        hold.local.set_refused([("pending/0.json", version, "InvalidKey", "too long for it")])

        def look(page: Any) -> None:
            page.wait_for_function(
                "() => document.getElementById('pending-count').textContent === '3'"
            )
            refused = page.locator("#refused li[data-key='pending/0.json']")
            refused.wait_for()
            assert "too long for it" in refused.inner_text()
            entry = page.locator(".entry").first
            entry.wait_for()
            text: Any = entry.inner_text()
            assert "a red square" in text
            assert '"color": "red"' in text
            assert "thumbnails v1 (1)" in page.locator("#namespaces").inner_text()
            # No token configured: local mode, said so; a browser on this machine reads.
            assert page.locator("#mode").inner_text() == "local mode"
            assert "local mode" in page.locator("#access-message").inner_text()
            assert page.locator("#token-form").is_hidden()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        problems = in_chromium(url, look)
    assert problems == [], f"console errors: {problems}"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 0


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2a8c8f50000000049454e44ae426082"
)


@pytest.mark.parametrize("served", [{"token": "dash-w", "read_token": "dash-r"}], indirect=True)
def test_the_dashboard_asks_for_a_token_and_shows_the_mode(served: tuple[str, Hold]) -> None:
    url, hold = served
    hold.put("pending/a.json", b"{}")
    memo = hold.memo("thumbnails", version="v1")
    memo.get_or_create({"prompt": "a red dot"}, lambda inputs, work: _png(work))

    def look(page: Any) -> None:
        page.wait_for_function("() => document.getElementById('mode').textContent !== ''")
        assert page.locator("#mode").inner_text() == "private: token mode"
        assert page.locator("#mode").get_attribute("data-access") == "none"
        assert "send a token to read" in page.locator("#access-message").inner_text()
        assert page.locator("#pending-count").inner_text() == "…"  # nothing read yet
        form = page.locator("#token-form")
        assert form.is_visible()
        page.fill("#token", "not-the-token")
        page.click("#token-form button[type=submit]")
        page.wait_for_function(
            "() => document.getElementById('access-message').textContent.includes('refused')"
        )
        assert page.evaluate("sessionStorage.getItem('cargohold-token')") is None
        page.fill("#token", "dash-r")  # the read token: enough for the dashboard
        page.click("#token-form button[type=submit]")
        page.wait_for_function("() => document.getElementById('pending-count').textContent !== '…'")
        assert page.locator("#mode").get_attribute("data-access") == "read"
        assert page.evaluate("sessionStorage.getItem('cargohold-token')") == "dash-r"
        assert form.is_hidden()
        # The preview was fetched with the token and is shown from a blob: URL.
        image = page.locator(".entry img")
        image.wait_for()
        page.wait_for_function("() => document.querySelector('.entry img').src.startsWith('blob:')")
        page.wait_for_function("() => document.querySelector('.entry img').naturalWidth === 1")
        assert "a red dot" in page.locator(".entry").first.inner_text()
        # Forgetting the token locks the page again.
        page.click("#forget-token")
        page.wait_for_function("() => document.getElementById('mode').dataset.access === 'none'")
        assert form.is_visible()

    problems = in_chromium(url, look)
    assert problems == [], f"console errors: {problems}"


def _png(work: Path) -> Path:
    path = work / "dot.png"
    path.write_bytes(PNG)
    return path
