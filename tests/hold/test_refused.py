"""A write the remote refuses for good is set aside: it blocks neither flush() for the other
keys nor readiness, every process sharing the data directory sees it with its reason (it
outlasts a restart), and the operator retries or drops it (API and CLI).

The remote is the file remote with a key under an object's name ("a" is a file, so "a/b"
cannot be stored): a real refusal, not a stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cargohold
from cargohold import Hold, Settings
from cargohold.remotes.file import FileRemote
from cargohold.server._app import readiness_problems


def _hold(remote: FileRemote, data_dir: Path) -> Hold:
    """Where ``cargohold.open`` (and so the CLI) finds the local tier of ``data_dir``."""
    return Hold(
        remote=remote,
        local_dir=data_dir / "local",
        settings=Settings.load({}, signal_handlers=False),
    )


def _refused_setup(tmp_path: Path) -> tuple[FileRemote, Hold]:
    remote = FileRemote(tmp_path / "remote")
    hold = _hold(remote, tmp_path / "data")
    hold.put("a", b"an object")
    hold.flush(30)
    hold.put("a/b", b"cannot sit under an object on the file remote")
    for i in range(5):
        hold.put(f"fine/{i}", b"fine %d" % i)
    with pytest.raises(cargohold.InvalidKey, match=r"'a/b'.*for good") as raised:
        hold.flush(30)
    assert "cargohold refused retry" in str(raised.value)
    return remote, hold


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "CARGOHOLD_REMOTE": (tmp_path / "remote").as_uri(),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_a_refused_write_is_set_aside_and_the_others_go_up(tmp_path: Path) -> None:
    remote, hold = _refused_setup(tmp_path)
    with hold:
        for i in range(5):
            assert remote.get(f"fine/{i}") == b"fine %d" % i
        status = hold.status()
        assert list(status.refused) == ["a/b"]
        assert "folder" in status.refused["a/b"]
        # Not the remote's fault: no loss window, no readiness problem, and the other
        # keys flush at once.
        assert status.loss_window == 0.0
        assert readiness_problems(hold) == []
        hold.put("later", b"after the refusal")
        with pytest.raises(cargohold.InvalidKey, match="'a/b'"):
            hold.flush(30)  # the others went up; the refusal is named, not waited for
        assert remote.get("later") == b"after the refusal"
        hold.syncer.flush(30, keys=["later"])  # a flush of other keys does not see it
        # The local copy is still what the app wrote.
        assert hold.get("a/b") == b"cannot sit under an object on the file remote"


def test_refusals_outlast_a_restart_and_show_in_other_processes(tmp_path: Path) -> None:
    _, hold = _refused_setup(tmp_path)
    hold.close(timeout=0)
    listed = _cli(tmp_path, "refused", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert row["key"] == "a/b"
    assert row["kind"] == "InvalidKey"
    assert "folder" in row["reason"]
    assert "a/b" in _cli(tmp_path, "refused", "ls").stdout
    stats = json.loads(_cli(tmp_path, "stats", "--json").stdout)
    assert list(stats["refused"]) == ["a/b"]
    with _hold(FileRemote(tmp_path / "remote"), tmp_path / "data") as again:
        assert list(again.status().refused) == ["a/b"]
        # Named at once, not sent again and waited for.
        with pytest.raises(cargohold.InvalidKey, match="'a/b'"):
            again.flush(30)


def test_retry_sends_it_again_once_the_remote_can_take_it(tmp_path: Path) -> None:
    remote, hold = _refused_setup(tmp_path)
    with hold:
        assert hold.retry_refused(["nothing/refused"]) == []
        hold.delete("a")  # the clash goes: now the remote can store a/b
        with pytest.raises(cargohold.InvalidKey):
            hold.flush(30)  # still set aside: nothing sends it again by itself
        assert list(hold.status().refused) == ["a/b"]
        assert hold.retry_refused() == ["a/b"]
        hold.flush(30)
        assert remote.get("a/b") == b"cannot sit under an object on the file remote"
        assert hold.status().refused == {}


def test_retry_from_the_cli_reaches_the_syncing_process(tmp_path: Path) -> None:
    remote, hold = _refused_setup(tmp_path)
    with hold:
        hold.delete("a")
        hold.syncer.flush(30, keys=["a"])
        refused = _cli(tmp_path, "refused", "retry")
        assert refused.returncode != 0
        assert "--all" in refused.stderr
        retried = _cli(tmp_path, "refused", "retry", "a/b")
        assert retried.returncode == 0, retried.stderr
        assert "1 change(s)" in retried.stdout
        hold.flush(60)  # this process's syncer sees the retry on its next batch
        assert remote.get("a/b") == b"cannot sit under an object on the file remote"


def test_a_retry_refused_again_is_set_aside_again(tmp_path: Path) -> None:
    _, hold = _refused_setup(tmp_path)
    with hold:
        assert hold.retry_refused("a/b") == ["a/b"]
        with pytest.raises(cargohold.InvalidKey, match="'a/b'"):
            hold.flush(30)
        assert list(hold.status().refused) == ["a/b"]


def test_drop_gives_the_change_up(tmp_path: Path) -> None:
    remote, hold = _refused_setup(tmp_path)
    with hold:
        assert hold.drop_refused(["a/b"]) == ["a/b"]
        hold.flush(30)
        assert hold.status().refused == {}
        assert hold.status().pending_count == 0
        with pytest.raises(cargohold.NotFoundError):
            hold.get("a/b")  # as the remote has it: not at all
        assert hold.get("a") == b"an object"
        assert remote.get("fine/0") == b"fine 0"


def test_drop_from_the_cli(tmp_path: Path) -> None:
    _, hold = _refused_setup(tmp_path)
    hold.close(timeout=0)
    dropped = _cli(tmp_path, "refused", "drop", "--all")
    assert dropped.returncode == 0, dropped.stderr
    assert "dropped 1" in dropped.stdout
    assert json.loads(_cli(tmp_path, "refused", "ls", "--json").stdout) == []
    with _hold(FileRemote(tmp_path / "remote"), tmp_path / "data") as again:
        again.flush(30)
        assert again.status().pending_count == 0


def test_a_rewrite_ends_the_refusal_and_is_kept_by_a_drop(tmp_path: Path) -> None:
    remote, hold = _refused_setup(tmp_path)
    with hold:
        hold.delete("a/b")  # a newer change of the key: the refusal no longer counts
        assert hold.status().refused == {}
        assert hold.drop_refused() == []
        hold.flush(30)
        assert hold.status().pending_count == 0
        assert remote.get("a") == b"an object"
