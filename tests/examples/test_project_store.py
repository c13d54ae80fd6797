"""The project store example: restart on an empty disk, every project comes back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cargohold
from examples.project_store.app import Project, ProjectStore
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS

APP = Path(__file__).resolve().parents[2] / "examples" / "project_store" / "app.py"


def test_projects_survive_a_restart_on_an_empty_disk(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path
) -> None:
    url = s3_url(seaweedfs, seaweedfs_bucket)
    pdf = b"%PDF-1.7\n" + os.urandom(200_000)
    with cargohold.open(url, data_dir=tmp_path / "disk", signal_handlers=False) as hold:
        store = ProjectStore(hold)
        for i in range(5):
            store.save(
                Project(f"p{i}", f"Project {i}", pages=[{"n": n} for n in range(i)]),
                {"scan.pdf": pdf},
            )
        store.save(Project("p1", "Project 1, renamed"))
        store.delete("p4")
        hold.flush(60)
    shutil.rmtree(tmp_path / "disk")  # the container is replaced: its disk is gone

    with cargohold.open(url, data_dir=tmp_path / "new-disk", signal_handlers=False) as hold:
        store = ProjectStore(hold)
        assert store.list() == ["p0", "p1", "p2", "p3"]
        assert store.load("p1").title == "Project 1, renamed"
        assert store.load("p3").pages == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert store.pdf("p2", "scan.pdf").read_bytes() == pdf
        assert store.pdf("p2", "scan.pdf").name == "scan.pdf"


def test_the_command_line(seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CARGOHOLD_REMOTE": s3_url(seaweedfs, seaweedfs_bucket),
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(APP.parents[2]),
    }
    (tmp_path / "notes.pdf").write_bytes(b"%PDF-1.4 notes")

    def run(*args: str) -> str:
        return subprocess.run(
            [sys.executable, str(APP), *args], env=env, capture_output=True, text=True, check=True
        ).stdout

    assert "saved demo" in run("save", "demo", "My project", str(tmp_path / "notes.pdf"))
    shutil.rmtree(tmp_path / "data")
    assert run("list").split() == ["demo"]
    assert '"title": "My project"' in run("show", "demo")
