"""cargohold doctor: hosts are simulated with environment variables, a fake /proc/mounts and
a fake root; unusable places are paths under /sys (unwritable even for root) and missing
directories; remotes are real (a file remote, SeaweedFS, a closed loopback port)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cargohold import Settings
from cargohold.doctor import DoctorReport, Problem, diagnose
from cargohold.local import LocalTier
from cargohold.remotes import MemoryRemote, ObjectInfo
from cargohold.remotes._base import PutRequest
from testsupport.hosts import clear_host
from testsupport.servers import SeaweedFS, free_port


class Box:
    """A simulated machine: its home, working and temp directories, mounts and root."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home, self.work, self.tmp = base / "home", base / "work", base / "systemp"
        self.root, self.mounts = base / "root", base / "mounts"  # no /.dockerenv in this root
        for folder in (self.home, self.work, self.tmp, self.root):
            folder.mkdir()
        self.mount()

    def mount(self, *lines: str) -> None:
        rows = ("/dev/vda / ext4 rw 0 0", *lines)
        self.mounts.write_text("".join(f"{row}\n" for row in rows))

    def diagnose(self, **settings: Any) -> DoctorReport:
        remote = settings.pop("remote_object", None)
        loaded = Settings.load(**settings)
        return diagnose(loaded, remote=remote, mounts=self.mounts, root=self.root)


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Box]:
    box = Box(tmp_path)
    # Tests (and configure_ml_caches) set variables directly: all are put back after, so
    # no later test (a doctor run in a subprocess, say) inherits them.
    saved = dict(os.environ)
    clear_host(monkeypatch, "TMPDIR", prefixes=("CARGOHOLD_",))
    monkeypatch.setenv("HOME", str(box.home))
    monkeypatch.chdir(box.work)
    monkeypatch.setattr(tempfile, "tempdir", str(box.tmp))
    yield box
    os.environ.clear()
    os.environ.update(saved)


def errors(report: DoctorReport) -> list[Problem]:
    return [p for p in report.problems if p.severity == "error"]


def find(report: DoctorReport, text: str) -> Problem:
    matches = [p for p in report.problems if text in p.what]
    assert matches, f"no problem mentions {text!r}: {report.problems}"
    return matches[0]


def test_a_healthy_machine_reports_everything_and_no_error(box: Box) -> None:
    report = box.diagnose(remote=(box.base / "remote").as_uri(), data_dir=box.base / "data")
    assert report.ok, report.problems
    assert report.host["name"] == "local"
    assert report.host["evidence"]
    data, cache, temp = report.directories
    assert (data.kind, data.chosen) == ("data", str(box.base / "data"))
    assert cache.chosen == str(box.home / ".cache" / "cargohold")
    assert temp.chosen is not None
    assert temp.chosen.startswith(str(box.tmp))
    assert all(d.candidates[-1]["result"] == "chosen" for d in report.directories)
    by_name = {v.name: v for v in report.ml_caches}
    assert by_name["HF_HOME"].path == str(box.home / ".cache" / "huggingface")
    assert by_name["HF_HOME"].origin == "default"
    assert by_name["HF_HOME"].usable is True
    assert not (box.home / ".cache" / "huggingface").exists(), "doctor creates no cache"
    remote = report.remote
    assert (remote.reachable, remote.credentials_accepted) == (True, True)
    assert (remote.create_only_honoured, remote.if_match_honoured) == (True, True)
    assert remote.latency_ms is not None
    assert [s["name"] for s in remote.steps] == [
        "reach",
        "write",
        "read",
        "create-only",
        "if-match",
        "delete",
    ]
    assert report.durability.shutdown_grace == 8.0  # 80% of a local machine's 10 s
    json.dumps(report.to_dict())  # pastes into an issue as JSON too


def test_railway_without_a_volume_or_a_remote_needs_fixing(box: Box) -> None:
    os.environ["RAILWAY_PROJECT_ID"] = "p-1"
    os.environ["RAILWAY_SERVICE_ID"] = "s-1"
    report = box.diagnose()
    assert report.host["name"] == "railway"
    assert not report.ok
    embedded = find(report, "embedded default")
    assert embedded.severity == "error"
    assert "redeploy" in embedded.what
    assert "CARGOHOLD_REMOTE" in embedded.fix
    drain = find(report, "drain of 0 s")
    assert "RAILWAY_DEPLOYMENT_DRAINING_SECONDS" in drain.fix
    assert report.durability.shutdown_grace == 1.0


def test_a_volume_the_host_reveals_is_used_and_makes_the_embedded_default_a_warning(
    box: Box,
) -> None:
    volume = box.base / "volume"
    volume.mkdir()
    box.mount(f"/dev/vdb {volume} ext4 rw,relatime 0 0")
    os.environ["FLY_APP_NAME"] = "signs"
    report = box.diagnose()
    data = report.directories[0]
    assert data.chosen == str(volume / ".cargohold")
    assert data.persistent
    assert report.host["persistent_mounts"] == [str(volume)]
    assert find(report, "embedded default").severity == "warning"
    assert report.ok, errors(report)
    assert report.durability.shutdown_grace == 4.0  # 80% of fly's 5 s


def test_unusable_directories_and_ml_caches_are_named_with_their_fix(box: Box) -> None:
    os.environ["HF_HOME"] = "/sys/cargohold-hf"
    os.environ["TORCH_HOME"] = str(box.base / "not" / "yet" / "torch")  # missing, creatable
    os.environ["TRANSFORMERS_CACHE"] = str(box.base / "old-cache")
    report = box.diagnose(remote="memory://doctor-dirs", data_dir="/sys/cargohold-data")
    data = report.directories[0]
    assert data.candidates[0]["path"] == "/sys/cargohold-data"
    assert "Error" in data.candidates[0]["result"]
    assert data.chosen == str(box.home / ".local" / "share" / "cargohold")
    setting = find(report, "/sys/cargohold-data")
    assert (setting.severity, "CARGOHOLD_DATA_DIR" in setting.fix) == ("error", True)
    hf = find(report, "HF_HOME=/sys/cargohold-hf")
    assert "configure_ml_caches()" in hf.fix
    by_name = {v.name: v for v in report.ml_caches}
    assert (by_name["HF_HOME"].origin, by_name["HF_HOME"].usable) == ("set", False)
    assert by_name["TORCH_HOME"].usable is True
    assert not (box.base / "not").exists()
    assert find(report, "TRANSFORMERS_CACHE").severity == "warning"
    assert not report.ok


def test_an_unwritable_home_breaks_the_libraries_defaults(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/sys/cargohold-home")
    report = box.diagnose(remote="memory://doctor-home", data_dir=box.base / "data")
    # One problem, the root cause, naming every cache it breaks: not one per cache.
    home = report.problems[0]
    assert (home.severity, home.cause, home.consequence) == ("error", "home", False)
    assert "HOME (/sys/cargohold-home) is not writable" in home.what
    assert "TORCH_HOME" in home.what
    assert "HF_HOME" in home.what
    assert "useradd -m -u 1000 user" in home.fix
    assert "configure_ml_caches()" in home.fix
    assert [p for p in report.problems if "Permission denied" in p.what] == [home]
    assert not [p for p in report.problems if p.area == "ml-caches"]
    by_name = {v.name: v for v in report.ml_caches}
    assert by_name["TORCH_HOME"].usable is False
    assert "under HOME" in by_name["TORCH_HOME"].reason
    cache = report.directories[1]
    assert cache.chosen is not None
    assert not cache.chosen.startswith("/sys")
    assert any(c["path"].startswith("/sys/cargohold-home") for c in cache.candidates)


def test_an_unreachable_remote_with_writes_waiting(box: Box) -> None:
    url = f"s3://bucket/app?endpoint=http://127.0.0.1:{free_port()}&access_key_id=a&secret_access_key=b"
    data = box.base / "data"
    tier = LocalTier(data / "local")
    tier.bind_remote(_clean_url(url, box))
    tier.write("orders/1.json", b"{}", metadata={}, content_type="application/json")
    tier.write("orders/2.json", b"{}", metadata={}, content_type="application/json")
    tier.close()
    time.sleep(0.01)  # a loss window measurably above zero
    report = box.diagnose(remote=url, data_dir=data, retry_timeout=0.5, connect_timeout=0.5)
    assert report.remote.reachable is False
    reach = find(report, "cannot be reached")
    assert "endpoint" in reach.fix
    waiting = find(report, "2 write(s)")
    assert waiting.severity == "error"
    # One cause: the unreachable remote first, the waiting writes following from it.
    assert (waiting.cause, waiting.consequence) == ("remote", True)
    group = next(g for g in report.causes() if waiting in g)
    assert group[0] == reach
    assert not reach.consequence
    assert report.durability.pending_count == 2
    assert (report.durability.loss_window or 0) > 0


def _clean_url(url: str, box: Box) -> str:
    """The URL as the remote reports it (secrets removed), which the local tier is bound to."""
    from cargohold.remotes import open_remote

    settings = Settings.load({}, retry_timeout=0.5)
    with open_remote(url, settings=settings) as remote:
        return remote.url


def test_pending_writes_that_cannot_flush_within_the_grace_period(box: Box) -> None:
    url = (box.base / "remote").as_uri()
    data = box.base / "data"
    tier = LocalTier(data / "local")
    tier.bind_remote(url)
    for n in range(4):
        tier.write(
            f"videos/{n}.mp4", os.urandom(2 * 1024 * 1024), metadata={}, content_type="video/mp4"
        )
    tier.close()
    report = box.diagnose(remote=url, data_dir=data, shutdown_grace=0.001)
    slow = find(report, "pending write(s)")
    assert slow.severity == "error"
    assert "hold.flush()" in slow.fix
    assert report.durability.flush_estimate is not None
    assert report.durability.flush_estimate > 0.001
    # The same journal, opened with another remote: its writes would go to the wrong place.
    other = box.diagnose(remote="memory://doctor-other", data_dir=data)
    assert "not for the configured remote" in find(other, "holds 4 change(s)").what


class IgnoresConditions(MemoryRemote):
    """A remote that silently ignores create-only and if-match (as some stores do)."""

    def _put(self, request: PutRequest) -> ObjectInfo:
        return super()._put(dataclasses.replace(request, mode="overwrite", if_match=None))


def test_a_remote_that_ignores_conditional_puts(box: Box) -> None:
    name = f"doctor-{uuid.uuid4().hex}"
    try:
        report = box.diagnose(remote_object=IgnoresConditions(name), data_dir=box.base / "data")
    finally:
        MemoryRemote.forget(name)
    assert report.remote.create_only_honoured is False
    assert report.remote.if_match_honoured is False
    problem = find(report, "does not honour create-only puts")
    assert "conditional writes" in problem.fix
    assert not report.ok


@pytest.fixture(scope="module")
def guarded_seaweedfs() -> Iterator[SeaweedFS]:
    config = {
        "identities": [
            {
                "name": "admin",
                "credentials": [
                    {"accessKey": "cargohold-test", "secretKey": "cargohold-test-secret"}
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    server = SeaweedFS(s3_config=config).start()
    try:
        server.make_bucket("doctor")
        yield server
    finally:
        server.cleanup()


def test_refused_credentials(box: Box, guarded_seaweedfs: SeaweedFS) -> None:
    url = (
        f"s3://doctor/app?endpoint={guarded_seaweedfs.endpoint}"
        "&access_key_id=cargohold-test&secret_access_key=wrong"
    )
    report = box.diagnose(remote=url, data_dir=box.base / "data", retry_timeout=1)
    assert (report.remote.reachable, report.remote.credentials_accepted) == (True, False)
    problem = find(report, "refused the credentials")
    assert "AWS_SECRET_ACCESS_KEY" in problem.fix
    good = url.replace("wrong", guarded_seaweedfs.secret_key)
    assert box.diagnose(remote=good, data_dir=box.base / "data").remote.credentials_accepted


def _space(box: Box) -> None:
    os.environ["SPACE_ID"] = "ana/sign-app"
    os.environ["SPACE_AUTHOR_NAME"] = "ana"
    os.environ["SPACE_REPO_NAME"] = "sign-app"
    os.environ["SYSTEM"] = "spaces"
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        os.environ.pop(name, None)
    os.environ["HF_HOME"] = str(box.base / "hf-home")  # no token file there


def test_on_a_space_the_fix_names_the_hub_remotes_and_hf_token_is_checked(box: Box) -> None:
    _space(box)
    report = box.diagnose()
    assert report.host["name"] == "huggingface-spaces"
    embedded = find(report, "embedded default")
    assert embedded.severity == "error"
    assert "hf://datasets/ana/sign-app-data" in embedded.fix
    assert "hf-s3://ana/sign-app-data" in embedded.fix
    assert "hf://buckets/ana/sign-app-data" in embedded.fix
    assert "file:///data" not in embedded.fix
    assert not re.search(r"(?<![\w-])s3://", embedded.fix)  # no plain S3 store on a Space
    token = find(report, "HF_TOKEN is not set")
    assert token.severity == "warning"
    assert "secret in the Space's settings" in token.fix
    os.environ["HF_TOKEN"] = "hf_" + "x" * 34
    assert not [p for p in box.diagnose().problems if "HF_TOKEN" in p.what]
    os.environ["HF_TOKEN"] = "not-a-token"
    assert find(box.diagnose(), "does not look like").severity == "warning"


class _HubNamed(MemoryRemote):
    """A real memory remote that reports a Hub URL (no Hub is reachable from tests)."""

    @property
    def url(self) -> str:
        return "hf://datasets/ana/sign-app-data"


def test_a_hub_remote_without_a_token_names_the_token_as_the_root_cause(box: Box) -> None:
    _space(box)
    remote = _HubNamed(f"doctor-hub-{uuid.uuid4().hex}")
    report = box.diagnose(remote="hf://datasets/ana/sign-app-data", remote_object=remote)
    first = report.problems[0]
    assert (first.severity, first.cause, first.consequence) == ("error", "hf-token", False)
    assert "HF_TOKEN is not set" in first.what
    assert "hf://datasets/ana/sign-app-data" in first.what
