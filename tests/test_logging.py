"""CARGOHOLD_LOG_LEVEL (log_level) works: it sets the level of cargohold's loggers only,
makes DEBUG and INFO visible in an app without logging set up, and never prints a line
twice in an app that set up its own (each case in a fresh interpreter, as an app is)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

APP = textwrap.dedent(
    """
    import logging, sys
    import cargohold
    if sys.argv[2] == "configured":
        logging.basicConfig(level=logging.WARNING, format="APP %(name)s %(message)s")
    if sys.argv[2] == "own-handler":  # the app sends cargohold's lines somewhere of its own
        own = logging.StreamHandler(sys.stderr)
        own.setFormatter(logging.Formatter("OWN %(name)s %(message)s"))
        logging.getLogger("cargohold").addHandler(own)
        logging.getLogger("cargohold").propagate = False
    root_handlers = list(logging.getLogger().handlers)
    with cargohold.open("memory://logging-app", data_dir=sys.argv[1], signal_handlers=False,
                        **({"log_level": sys.argv[3]} if len(sys.argv) > 3 else {})):
        logging.getLogger("cargohold.memo").debug("a debug line")
        logging.getLogger("cargohold.memo").info("an info line")
        logging.getLogger("cargohold.sync").warning("a warning line")
        logging.getLogger("app").info("the app's own info line")
    assert logging.getLogger().level == logging.WARNING
    assert logging.getLogger().handlers == root_handlers, "the root logger was touched"
    print("LEVEL", logging.getLevelName(logging.getLogger("cargohold").level))
    """
)


def _run(tmp_path: Path, mode: str, *args: str, level: str | None = None) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CARGOHOLD_LOG_LEVEL"}
    if level is not None:
        env["CARGOHOLD_LOG_LEVEL"] = level
    done = subprocess.run(
        [sys.executable, "-c", APP, str(tmp_path / "data"), mode, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return done.stdout, done.stderr


def test_unset_leaves_logging_to_the_app(tmp_path: Path) -> None:
    out, err = _run(tmp_path, "bare")
    assert "LEVEL NOTSET" in out
    assert "a warning line" in err  # Python's last resort: WARNING and up
    assert "an info line" not in err
    assert "a debug line" not in err


def test_debug_is_visible_without_any_logging_set_up(tmp_path: Path) -> None:
    out, err = _run(tmp_path, "bare", level="debug")
    assert "LEVEL DEBUG" in out
    assert "DEBUG cargohold.memo: a debug line" in err
    assert "INFO cargohold.memo: an info line" in err
    assert err.count("a warning line") == 1
    assert "the app's own info line" not in err, "only cargohold's loggers change"


def test_an_app_with_its_own_logging_gets_each_line_once_in_its_format(tmp_path: Path) -> None:
    out, err = _run(tmp_path, "configured", level="info")
    assert "LEVEL INFO" in out
    assert err.count("an info line") == 1
    assert "APP cargohold.memo an info line" in err
    assert "a debug line" not in err
    assert err.count("a warning line") == 1
    assert "the app's own info line" not in err, "the root logger keeps its WARNING"


def test_an_explicit_argument_beats_the_variable(tmp_path: Path) -> None:
    out, err = _run(tmp_path, "bare", "warning", level="debug")
    assert "LEVEL WARNING" in out
    assert "an info line" not in err
    assert "a warning line" in err


def test_an_app_handler_on_the_cargohold_logger_gets_each_line_once(tmp_path: Path) -> None:
    _, err = _run(tmp_path, "own-handler", level="info")
    assert err.count("an info line") == 1
    assert "OWN cargohold.memo an info line" in err


def test_open_applies_the_log_level_once(tmp_path: Path, monkeypatch: Any) -> None:
    """cargohold.open() applies log_level once, before anything that may log; a Hold
    built directly applies it itself, also once. (Recorded, not applied: the logger is
    the process's, and this test runs in the suite's.)"""
    import uuid

    import cargohold
    import cargohold.hold
    from cargohold.remotes import MemoryRemote

    applied: list[cargohold.Settings] = []
    monkeypatch.setattr(cargohold.hold, "apply_log_level", applied.append)
    name = f"log-once-{uuid.uuid4().hex}"
    with cargohold.open(
        f"memory://{name}", data_dir=tmp_path / "a", signal_handlers=False, log_level="info"
    ):
        pass
    assert [s.log_level for s in applied] == ["info"]
    settings = cargohold.Settings.load({}, signal_handlers=False, log_level="info")
    with cargohold.Hold(remote=MemoryRemote(name), local_dir=tmp_path / "b", settings=settings):
        pass
    assert applied[1:] == [settings]
    MemoryRemote.forget(name)
