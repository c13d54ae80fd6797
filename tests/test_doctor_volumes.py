"""cargohold doctor on bucket volumes: a SQLite database or a Hold's data directory on a
mount without trustworthy file locks is a problem with its fix.

No FUSE or NFS can be mounted here, so the mounts are /proc/mounts lines in the form
hf-mount leaves (see tests/test_volumes.py), over real directories holding real SQLite
databases; the remote is a real file remote.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cargohold import Settings
from cargohold._volume_scan import Scan, database_url_path, sqlite_files
from cargohold.cli import doctor_text
from cargohold.doctor import DoctorReport, Problem, diagnose
from testsupport.hosts import clear_host

HF_FUSE = "hf-mount {} fuse rw,nosuid,nodev,relatime,user_id=0,group_id=0,default_permissions 0 0"
EFS = "fs-1.efs.us-east-1.amazonaws.com:/ {} nfs4 rw,relatime,vers=4.1,hard,proto=tcp 0 0"


class Box:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root, self.mounts = base / "root", base / "mounts"
        for name in ("home", "work", "systemp", "root"):
            (base / name).mkdir()
        self.bucket = base / "data"
        self.bucket.mkdir()

    def diagnose(self, line: str, **settings: Any) -> DoctorReport:
        rows = ("/dev/vda / ext4 rw 0 0", line.format(self.bucket))
        self.mounts.write_text("".join(f"{row}\n" for row in rows))
        settings.setdefault("remote", (self.base / "remote").as_uri())
        return diagnose(Settings.load(**settings), mounts=self.mounts, root=self.root)


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    saved = dict(os.environ)
    clear_host(monkeypatch, "TMPDIR", "DATABASE_URL", prefixes=("CARGOHOLD_",))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systemp"))
    box = Box(tmp_path)
    monkeypatch.chdir(tmp_path / "work")
    yield box
    os.environ.clear()
    os.environ.update(saved)


def space() -> None:
    os.environ["SPACE_ID"] = "ana/labels"
    os.environ["SPACE_HOST"] = "ana-labels.hf.space"


def make_sqlite(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    return path


def about(report: DoctorReport, text: str) -> list[Problem]:
    return [p for p in report.problems if text in p.what]


def test_a_sqlite_database_on_a_spaces_bucket_is_an_error_with_the_fix(box: Box) -> None:
    space()
    db = make_sqlite(box.bucket / "label_studio.sqlite3")
    (box.bucket / "media").mkdir()
    (box.bucket / "media" / "notes.db").write_text("not a database")  # a name is not enough
    report = box.diagnose(HF_FUSE)
    (volume,) = report.host["volumes"]
    assert volume["path"] == str(box.bucket)
    assert (volume["kind"], volume["persistent"], volume["lockable"]) == ("hf-mount", True, False)
    (problem,) = about(report, "SQLite database")
    assert problem.severity == "error"
    assert str(db) in problem.what
    assert "notes.db" not in problem.what
    assert "database is locked" in problem.what
    assert "container's own disk" in problem.fix
    assert "hf-s3://OWNER/NAME" in problem.fix
    assert not report.ok
    text = doctor_text(report)  # what `cargohold doctor` prints
    assert f"volume {box.bucket} (fuse, hf-mount; persistent, NO LOCKS:" in text


def test_a_hold_data_directory_on_the_bucket_is_named_once(box: Box) -> None:
    space()
    make_sqlite(box.bucket / "old-app" / "local" / "index.sqlite3")
    report = box.diagnose(HF_FUSE)
    (problem,) = about(report, "cargohold data directory")
    assert str(box.bucket / "old-app") in problem.what
    assert problem.severity == "error"
    assert "CARGOHOLD_DATA_DIR" in problem.fix
    assert "CARGOHOLD_REMOTE=hf-s3://OWNER/NAME" in problem.fix
    assert not about(report, "SQLite database")  # the Hold's index is not counted twice


def test_a_data_dir_set_on_the_bucket_is_reported_not_raised(box: Box) -> None:
    space()
    report = box.diagnose(HF_FUSE, data_dir=box.bucket / "hold")
    data = report.directories[0]
    assert data.chosen is None
    assert data.error is not None
    (problem,) = about(report, "cannot hold the local tier")
    assert problem.severity == "error"
    assert "hf-s3://OWNER/NAME" in problem.fix
    assert not (box.bucket / "hold").exists()


def test_a_database_url_on_the_bucket_is_flagged_before_the_file_exists(box: Box) -> None:
    space()
    os.environ["DATABASE_URL"] = f"sqlite:///{box.bucket}/app.db"
    (problem,) = about(box.diagnose(HF_FUSE), "SQLite database")
    assert str(box.bucket / "app.db") in problem.what


def test_a_clean_bucket_volume_is_no_problem(box: Box) -> None:
    space()
    (box.bucket / "outputs").mkdir()
    (box.bucket / "outputs" / "video.mp4").write_bytes(b"\0" * 16)
    report = box.diagnose(HF_FUSE)
    assert not [p for p in report.problems if p.area == "volumes"]
    assert report.directories[0].chosen == str(box.base / "home" / ".local" / "share" / "cargohold")


def test_a_database_on_another_network_volume_is_a_warning(box: Box) -> None:
    make_sqlite(box.bucket / "shared.sqlite")
    (problem,) = about(box.diagnose(EFS), "SQLite database")
    assert problem.severity == "warning"
    assert "network file system (nfs4)" in problem.what
    assert "local disk" in problem.fix


def test_the_scan_is_bounded_and_reads_headers(tmp_path: Path) -> None:
    deep = make_sqlite(tmp_path / "a" / "b" / "c" / "d" / "e" / "deep.sqlite")
    shallow = make_sqlite(tmp_path / "a" / "shallow.sqlite")
    journaled = make_sqlite(tmp_path / "a" / "store")  # no suffix, but a journal beside it
    (tmp_path / "a" / "store-journal").write_bytes(b"")
    assert sqlite_files(tmp_path) == Scan([shallow, journaled])  # "deep" is 5 folders down
    assert sqlite_files(tmp_path, max_depth=5) == Scan([shallow, journaled, deep])
    # Spent on the folder "a": the result says it was cut short.
    assert sqlite_files(tmp_path, max_entries=1) == Scan([], "it looked at 1 entries")
    assert sqlite_files(tmp_path, max_listings=1) == Scan([], "it listed 1 folders")
    assert sqlite_files(tmp_path / "missing") == Scan([])


def test_the_scan_opens_no_fifo_and_follows_no_symlink(tmp_path: Path) -> None:
    volume, outside = tmp_path / "vol", tmp_path / "outside"
    (volume / "sub").mkdir(parents=True)
    os.mkfifo(volume / "sub" / "app.db")  # opening it for reading would wait for a writer
    os.mkfifo(tmp_path / "pipe")
    (volume / "sub" / "pipe.db").symlink_to(tmp_path / "pipe")
    elsewhere = make_sqlite(outside / "real.db")
    (volume / "linked.db").symlink_to(elsewhere)  # the database is not on the volume
    real = make_sqlite(volume / "sub" / "real.sqlite")
    assert sqlite_files(volume) == Scan([real])


def test_the_scan_stops_at_its_deadline_and_says_so(tmp_path: Path) -> None:
    make_sqlite(tmp_path / "app.db")
    # A deadline already past: nothing is listed (no sleep, no timing to race).
    assert sqlite_files(tmp_path, deadline=0.0) == Scan([], "it took over 0 s")


def test_doctor_says_when_the_volume_scan_was_cut_short(box: Box) -> None:
    # More folders than the scan lists (200): real folders, cheap to make.
    for n in range(201):
        (box.bucket / f"d{n:03}").mkdir()
    space()
    report = box.diagnose(HF_FUSE)
    (problem,) = about(report, "cut short")
    assert problem.severity == "warning"
    assert "was cut short" in doctor_text(report)  # what `cargohold doctor` prints
    assert f"on {box.bucket} was cut short (it listed 200 folders)" in problem.what
    assert f"find {box.bucket} -type f" in problem.fix


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////data/app.db", "/data/app.db"),
        ("sqlite:///data/app.db?timeout=5", "/data/app.db"),  # relative in SQLAlchemy
        ("sqlite+pysqlite:////data/app.db", "/data/app.db"),
        ("sqlite://:memory:", None),
        ("postgresql://db/app", None),
        ("", None),
    ],
)
def test_database_url_paths(
    url: str, expected: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    found = database_url_path({"DATABASE_URL": url})
    if expected is None:
        assert found is None
    elif url.startswith("sqlite:///data"):
        assert found == tmp_path / "data" / "app.db"
    else:
        assert found == Path(expected)
