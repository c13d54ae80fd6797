"""Writable paths: real probes in real directories. Hosts are simulated with environment
variables and a fake /proc/mounts; unusable places are paths under /sys (unwritable even for
root, which runs these tests) and files where a directory is expected."""

from __future__ import annotations

import logging
import os
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from cargohold import PermissionDenied, Settings, StorageFull
from cargohold.paths import (
    cache_dir,
    configure_ml_caches,
    data_dir,
    probe_dir,
    temp_dir,
)
from cargohold.platform import detect
from testsupport.hosts import ML_VARS, clear_host


class Box:
    """The places a test runs in: its own home, working and temp directories."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.home = base / "home"
        self.work = base / "work"
        self.tmp = base / "systemp"
        self.mounts = base / "mounts"
        self.set_mounts()

    def set_mounts(self, *lines: str) -> Path:
        self.mounts.write_text("".join(f"{line}\n" for line in ("/dev/vda / ext4 rw 0 0", *lines)))
        return self.mounts


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Box:
    box = Box(tmp_path)
    for directory in (box.home, box.work, box.tmp):
        directory.mkdir()
    clear_host(monkeypatch, "XDG_DATA_HOME", "CARGOHOLD_DATA_DIR")
    monkeypatch.setenv("HOME", str(box.home))
    monkeypatch.chdir(box.work)
    monkeypatch.setattr(tempfile, "tempdir", str(box.tmp))
    return box


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="cargohold.paths")
    return caplog


def settings(**values: object) -> Settings:
    return Settings.load({}, **values)


# -- probe_dir ----------------------------------------------------------------------------


def test_probe_dir_proves_a_directory_and_leaves_nothing_behind(tmp_path: Path) -> None:
    assert probe_dir(tmp_path / "new" / "deeper") is None
    assert list((tmp_path / "new" / "deeper").iterdir()) == []


def test_probe_dir_says_why_a_place_is_unusable(tmp_path: Path) -> None:
    assert "PermissionError" in (probe_dir(Path("/sys/cargohold-test")) or "")
    (tmp_path / "file").write_text("not a directory")
    assert "Not a directory" in (probe_dir(tmp_path / "file") or "")
    assert "Not a directory" in (probe_dir(tmp_path / "file" / "below") or "")


def test_created_directories_are_never_world_writable(tmp_path: Path) -> None:
    old = os.umask(0)  # the umask some container images run with
    try:
        assert probe_dir(tmp_path / "a" / "b" / "c") is None
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755


# -- data_dir -----------------------------------------------------------------------------


def test_the_setting_comes_first(box: Box, logs: pytest.LogCaptureFixture) -> None:
    choice = data_dir(settings(data_dir=box.base / "mine"), mounts=box.mounts)
    assert choice.path == box.base / "mine"
    assert "CARGOHOLD_DATA_DIR" in choice.source
    assert choice.rejected == []
    assert not choice.tmpfs
    assert choice.free_bytes is not None
    assert choice.free_bytes > 0
    assert any(str(choice.path) in r.getMessage() for r in logs.records)


def test_hold_open_still_gets_a_path(box: Box) -> None:
    # cargohold.hold.open() calls data_dir(settings).path.
    assert data_dir(settings(data_dir=box.base / "d")).path.is_dir()


@pytest.mark.parametrize("unusable", ["/sys/cargohold-test", "a-file"])
def test_an_unusable_setting_is_passed_over_loudly(
    box: Box, unusable: str, logs: pytest.LogCaptureFixture
) -> None:
    (box.base / "a-file").write_text("x")
    bad = Path(unusable) if unusable.startswith("/") else box.base / unusable
    choice = data_dir(settings(data_dir=bad), mounts=box.mounts)
    assert choice.path == box.home / ".local" / "share" / "cargohold"
    assert [(p, why != "") for p, _, why in choice.rejected] == [(bad, True)]
    warned = [r for r in logs.records if r.levelno == logging.WARNING]
    assert any(str(bad) in r.getMessage() for r in warned)


def test_a_persistent_mount_beats_the_home_directory(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = box.base / "volume"
    monkeypatch.setenv("RAILWAY_SERVICE_ID", "svc")
    monkeypatch.setenv("RAILWAY_VOLUME_MOUNT_PATH", str(volume))
    choice = data_dir(settings(), mounts=box.mounts)
    assert choice.path == volume / ".cargohold"
    assert choice.persistent
    assert str(volume) in choice.source
    assert cache_dir(mounts=box.mounts).path == volume / ".cache" / "cargohold"
    # Scratch files stay off the volume: they would spend durable space and outlive a crash.
    scratch = temp_dir(mounts=box.mounts)
    assert not scratch.path.is_relative_to(volume)
    assert not scratch.persistent


def test_a_volume_found_in_proc_mounts(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = box.base / "flyvol"
    box.set_mounts(f"/dev/vdb {volume} ext4 rw,relatime 0 0")
    monkeypatch.setenv("FLY_APP_NAME", "demo")
    choice = data_dir(settings(), mounts=box.mounts)
    assert (choice.path, choice.persistent, choice.tmpfs) == (volume / ".cargohold", True, False)


def test_without_a_volume_a_container_disk_is_not_persistent(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DYNO", "web.1")
    choice = data_dir(settings(), mounts=box.mounts)
    assert choice.path == box.home / ".local" / "share" / "cargohold"
    assert not choice.persistent


def test_a_local_machine_disk_is_persistent_but_its_temp_dir_is_not(box: Box) -> None:
    local = detect({}, mounts=box.mounts, root=box.base)
    assert local.name == "local"
    assert data_dir(settings(), mounts=box.mounts, host=local).persistent
    assert not temp_dir(mounts=box.mounts, host=local).persistent


def test_ram_backed_candidates_give_way_to_disk(box: Box, logs: pytest.LogCaptureFixture) -> None:
    box.set_mounts(f"tmpfs {box.home} tmpfs rw 0 0")
    choice = data_dir(settings(), mounts=box.mounts)
    assert choice.path == box.work / ".cargohold"
    assert not choice.tmpfs
    ((skipped, _, why),) = choice.rejected
    assert skipped == box.home / ".local" / "share" / "cargohold"
    assert "RAM" in why


def test_when_everything_is_ram_the_first_candidate_is_used(box: Box) -> None:
    box.set_mounts(f"tmpfs {box.base} tmpfs rw 0 0")
    choice = data_dir(settings(), mounts=box.mounts)
    assert choice.path == box.home / ".local" / "share" / "cargohold"
    assert choice.tmpfs
    assert not choice.persistent
    assert all("RAM" in why for _, _, why in choice.rejected)


def test_an_explicit_ram_backed_setting_is_honoured_with_a_warning(
    box: Box, logs: pytest.LogCaptureFixture
) -> None:
    box.set_mounts(f"tmpfs {box.base}/ram tmpfs rw 0 0")
    choice = data_dir(settings(data_dir=box.base / "ram" / "d"), mounts=box.mounts)
    assert choice.path == box.base / "ram" / "d"
    assert choice.tmpfs
    assert not choice.persistent
    assert any("RAM-backed" in r.getMessage() for r in logs.records if r.levelno >= logging.WARNING)


def test_cloud_run_disk_counts_as_ram_but_a_mounted_bucket_does_not(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K_SERVICE", "demo")
    assert data_dir(settings(), mounts=box.mounts).tmpfs
    bucket = box.base / "bucket"
    box.set_mounts(f"gcsfuse {bucket} fuse.gcsfuse rw 0 0")
    # A cache may live on the bucket: persistent, and it spends no memory.
    cache = cache_dir(mounts=box.mounts)
    assert cache.path == bucket / ".cache" / "cargohold"
    assert (cache.tmpfs, cache.persistent) == (False, True)
    # The local tier may not: a FUSE bucket keeps neither file locks nor fsync's promise.
    choice = data_dir(settings(), mounts=box.mounts)
    assert choice.tmpfs
    skipped = [(p, why) for p, _, why in choice.rejected if p == bucket / ".cargohold"]
    assert len(skipped) == 1
    assert "FUSE" in skipped[0][1]
    assert not (bucket / ".cargohold").exists()


def test_too_little_free_space_is_storage_full(box: Box) -> None:
    with pytest.raises(StorageFull) as caught:
        data_dir(settings(), mounts=box.mounts, min_free_bytes=2**62)
    message = str(caught.value)
    assert str(box.home) in message
    assert str(box.work) in message
    assert "bytes free" in message


def test_no_usable_directory_names_every_candidate(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/sys/cargohold-home")
    monkeypatch.chdir("/sys")
    monkeypatch.setattr(tempfile, "tempdir", "/sys/cargohold-tmp")
    with pytest.raises(PermissionDenied) as caught:
        data_dir(settings(data_dir="/sys/cargohold-data"), mounts=box.mounts)
    for place in ("cargohold-data", "cargohold-home", "/sys/.cargohold", "cargohold-tmp"):
        assert place in str(caught.value)


# -- cache_dir and temp_dir ---------------------------------------------------------------


def test_cache_dir_and_its_shared_root(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir(mounts=box.mounts).path == box.home / ".cache" / "cargohold"
    assert cache_dir(app=None, mounts=box.mounts).path == box.home / ".cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(box.base / "xdg"))
    assert cache_dir(app=None, mounts=box.mounts).path == box.base / "xdg"
    explicit = cache_dir(path=box.base / "c", mounts=box.mounts)
    assert (explicit.path, explicit.source) == (box.base / "c" / "cargohold", "the explicit path")


def test_temp_dir_is_private_to_this_user(box: Box) -> None:
    choice = temp_dir(mounts=box.mounts)
    assert choice.path.parent == box.tmp
    info = choice.path.stat()
    assert info.st_uid == os.getuid()
    assert stat.S_IMODE(info.st_mode) == 0o700


def test_temp_dir_refuses_a_folder_planted_by_another_user(box: Box) -> None:
    planted = box.tmp / f"cargohold-{os.getuid()}-tmp"
    planted.mkdir(mode=0o777)
    os.chown(planted, 4242, 4242)  # the tests run as root, so they can play the other user
    choice = temp_dir(mounts=box.mounts)
    assert choice.path == box.home / ".cache" / "cargohold" / "tmp"
    assert any(p == planted and "4242" in why for p, _, why in choice.rejected)


def test_temp_dir_refuses_a_planted_symlink_and_leaves_its_target_alone(box: Box) -> None:
    target = box.base / "elsewhere"
    target.mkdir()
    (box.tmp / f"cargohold-{os.getuid()}-tmp").symlink_to(target)
    choice = temp_dir(mounts=box.mounts)
    assert choice.path == box.home / ".cache" / "cargohold" / "tmp"
    assert "symlink" in choice.rejected[0][2]
    assert list(target.iterdir()) == []


def test_temp_dir_tightens_our_own_open_folder(box: Box) -> None:
    ours = box.tmp / f"cargohold-{os.getuid()}-tmp"
    ours.mkdir()
    ours.chmod(0o755)
    assert temp_dir(mounts=box.mounts).path == ours
    assert stat.S_IMODE(ours.stat().st_mode) == 0o700


def test_temp_dir_prefers_disk_over_a_tmpfs_tmp(box: Box) -> None:
    box.set_mounts(f"tmpfs {box.tmp} tmpfs rw 0 0")
    choice = temp_dir(mounts=box.mounts)
    assert choice.path == box.home / ".cache" / "cargohold" / "tmp"
    assert not choice.tmpfs


# -- configure_ml_caches ------------------------------------------------------------------


def test_unset_variables_are_pointed_at_the_cache_root(box: Box) -> None:
    old = os.umask(0)
    try:
        results = {r.name: r for r in configure_ml_caches(mounts=box.mounts)}
    finally:
        os.umask(old)
    assert {r.action for r in results.values()} == {"set"}
    root = box.home / ".cache"
    assert os.environ["XDG_CACHE_HOME"] == str(root)
    assert os.environ["HF_HOME"] == str(root / "huggingface")
    assert os.environ["HF_HUB_CACHE"] == str(root / "huggingface" / "hub")
    assert os.environ["HF_XET_CACHE"] == str(root / "huggingface" / "xet")
    assert os.environ["HF_DATASETS_CACHE"] == str(root / "huggingface" / "datasets")
    assert os.environ["SENTENCE_TRANSFORMERS_HOME"] == os.environ["HF_HUB_CACHE"]
    assert os.environ["TORCH_HOME"] == str(root / "torch")
    assert Path(os.environ["GRADIO_TEMP_DIR"]).is_relative_to(box.tmp)
    for name in results:
        path = Path(os.environ[name])
        assert path.is_dir()
        assert stat.S_IMODE(path.stat().st_mode) & 0o002 == 0, name  # never world-writable


def test_a_working_setting_is_kept_and_derived_ones_follow_it(box: Box) -> None:
    models = box.base / "models"
    os.environ["HF_HOME"] = str(models)
    results = {r.name: r for r in configure_ml_caches(mounts=box.mounts)}
    assert results["HF_HOME"].action == "kept"
    assert os.environ["HF_HOME"] == str(models)
    assert os.environ["HF_HUB_CACHE"] == str(models / "hub")


def test_an_unusable_setting_is_replaced_with_a_warning(
    box: Box, logs: pytest.LogCaptureFixture
) -> None:
    os.environ["TORCH_HOME"] = "/sys/cargohold-torch"
    torch = {r.name: r for r in configure_ml_caches(mounts=box.mounts)}["TORCH_HOME"]
    assert (torch.action, torch.previous) == ("replaced", "/sys/cargohold-torch")
    assert os.environ["TORCH_HOME"] == str(box.home / ".cache" / "torch")
    warned = [r.getMessage() for r in logs.records if r.levelno == logging.WARNING]
    assert any("/sys/cargohold-torch" in m for m in warned)


def test_an_unwritable_nltk_search_path_is_extended_not_lost(box: Box) -> None:
    os.environ["NLTK_DATA"] = "/sys/cargohold-nltk"
    nltk = {r.name: r for r in configure_ml_caches(mounts=box.mounts)}["NLTK_DATA"]
    assert nltk.action == "extended"
    first, rest = os.environ["NLTK_DATA"].split(os.pathsep, 1)
    assert (Path(first), rest) == (box.home / ".cache" / "nltk_data", "/sys/cargohold-nltk")


def test_the_legacy_hub_cache_variable_counts_as_set(box: Box) -> None:
    os.environ["HUGGINGFACE_HUB_CACHE"] = str(box.base / "legacy-hub")
    hub = {r.name: r for r in configure_ml_caches(mounts=box.mounts)}["HF_HUB_CACHE"]
    assert hub.action == "kept"
    assert "HF_HUB_CACHE" not in os.environ  # the library reads the legacy name itself
    assert os.environ["SENTENCE_TRANSFORMERS_HOME"] == str(box.base / "legacy-hub")


def test_transformers_cache_is_warned_about(box: Box, logs: pytest.LogCaptureFixture) -> None:
    os.environ["TRANSFORMERS_CACHE"] = str(box.base / "old")
    configure_ml_caches(mounts=box.mounts)
    assert os.environ["TRANSFORMERS_CACHE"] == str(box.base / "old")
    assert any(
        "TRANSFORMERS_CACHE" in r.getMessage() for r in logs.records if r.levelno == logging.WARNING
    )


def test_a_second_call_changes_nothing(box: Box) -> None:
    configure_ml_caches(mounts=box.mounts)
    before = dict(os.environ)
    again = configure_ml_caches(mounts=box.mounts)
    assert {r.action for r in again} == {"kept"}
    assert dict(os.environ) == before


def test_when_everything_is_set_nothing_is_probed_for_a_root(box: Box) -> None:
    for name in ML_VARS:
        if name != "HUGGINGFACE_HUB_CACHE":
            os.environ[name] = str(box.base / "given" / name.lower())
    configure_ml_caches(mounts=box.mounts)
    assert not (box.home / ".cache").exists()
    assert list(box.tmp.iterdir()) == []


def test_caches_land_on_the_persistent_mount(box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    volume = box.base / "data"
    monkeypatch.setenv("RAILWAY_PROJECT_ID", "p")
    monkeypatch.setenv("RAILWAY_VOLUME_MOUNT_PATH", str(volume))
    configure_ml_caches(mounts=box.mounts)
    assert os.environ["HF_HOME"] == str(volume / ".cache" / "huggingface")
    assert not Path(os.environ["GRADIO_TEMP_DIR"]).is_relative_to(volume)


def test_setting_a_variable_after_its_library_was_imported_is_logged(
    box: Box, logs: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("huggingface_hub")
    assert "huggingface_hub" in sys.modules
    configure_ml_caches(mounts=box.mounts)
    late = [r.getMessage() for r in logs.records if "after huggingface_hub" in r.getMessage()]
    assert late
    assert "HF_HOME" in late[0]
