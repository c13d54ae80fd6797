"""The dashboard in headless Chromium (Debian's, driven by Playwright; no browser download)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
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
def served(tmp_path: Path) -> Iterator[tuple[str, Hold]]:
    """The service for a Hold, on a free loopback port, in a thread of this process."""
    name = f"dashboard-{uuid.uuid4().hex}"
    hold = cargohold.open(f"memory://{name}", data_dir=tmp_path, signal_handlers=False)
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


def test_the_dashboard_shows_pending_writes_and_memo_entries(served: tuple[str, Hold]) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: ./dev test installs it (apt-get install chromium)"
        )
    from playwright.sync_api import sync_playwright

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
                page.wait_for_function(
                    "document.getElementById('pending-count').textContent === '3'"
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
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            finally:
                browser.close()
    assert problems == [], f"console errors: {problems}"
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 0
