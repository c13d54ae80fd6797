"""Bucket volumes on Spaces and other mounts where file locks and fsync cannot be trusted.

Nothing here can mount FUSE or NFS (no privileges, no hf-mount), so the mounts are
described by /proc/mounts lines in the exact form hf-mount leaves (FUSE: fuser mounts with
fstype "fuse" and the source "hf-mount"; NFS: "127.0.0.1:/" with nolock, shown with
local_lock=all), pointing at real directories on this machine's disk: a legitimate stand-in
for what detection and the path rules read. The lock probe runs on real directories with a
real second process; where it must fail, one seam stands in for a file system that accepts
a lock and holds nothing (or loses a rename), which no directory here can do, and says so.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pytest

from cargohold import ConfigError, Settings
from cargohold import paths as paths_module
from cargohold.paths import cache_dir, data_dir, probe_locking
from cargohold.platform import detect, parse_mounts, volume_of
from testsupport.hosts import clear_host

HF_FUSE = "hf-mount {} fuse rw,nosuid,nodev,relatime,user_id=0,group_id=0,default_permissions,allow_other 0 0"
HF_NFS = (
    "127.0.0.1:/ {} nfs rw,relatime,vers=3,rsize=1048576,wsize=1048576,namlen=255,hard,"
    "nolock,proto=tcp,port=40123,timeo=600,retrans=2,sec=sys,mountaddr=127.0.0.1,mountvers=3,"
    "mountport=40123,mountproto=tcp,local_lock=all,addr=127.0.0.1 0 0"
)
EFS = "fs-1.efs.us-east-1.amazonaws.com:/ {} nfs4 rw,relatime,vers=4.1,hard,proto=tcp 0 0"
# Rootless Podman's container root, as /proc/mounts shows it inside the container.
PODMAN_ROOT = (
    "fuse-overlayfs / fuse.fuse-overlayfs rw,nodev,relatime,user_id=0,group_id=0,"
    "default_permissions,allow_other 0 0"
)
# gVisor (Cloud Run's first generation) serves the container's root over 9p.
GVISOR_ROOT = "none / 9p rw,trans=fd,rfdno=4,wfdno=4,aname=/,dfltuid=4294967294 0 0"
SPACE = {"SPACE_ID": "ana/labels", "SPACE_HOST": "ana-labels.hf.space"}


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine of its own: home, working and temp directories under ``tmp_path``."""
    for name in ("home", "work", "systemp"):
        (tmp_path / name).mkdir()
    clear_host(monkeypatch, "XDG_DATA_HOME", "XDG_CACHE_HOME", prefixes=("CARGOHOLD_",))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systemp"))
    return tmp_path


def mounts(base: Path, *lines: str) -> Path:
    path = base / "mounts"
    path.write_text("".join(f"{line}\n" for line in ("/dev/vda / ext4 rw 0 0", *lines)))
    return path


# -- what platform detection says ------------------------------------------------------------


def test_hf_mount_lines_are_bucket_volumes_without_locks() -> None:
    table = parse_mounts(
        "\n".join(
            (
                HF_FUSE.format("/mnt/fuse"),
                HF_NFS.format("/mnt/nfs"),
                EFS.format("/mnt/efs"),
                "gcsfuse /mnt/gcs fuse.gcsfuse rw 0 0",
                "/dev/vdb /mnt/disk ext4 rw 0 0",
                PODMAN_ROOT.replace(" / ", " /mnt/overlay "),
                "/dev/sdb1 /mnt/ntfs fuseblk rw,relatime,user_id=0,group_id=0,allow_other 0 0",
            )
        )
    )
    kinds = {str(m.point): volume_of(m) for m in table}
    assert {p: (v.kind, v.lockable) for p, v in kinds.items()} == {
        "/mnt/fuse": ("hf-mount", False),
        "/mnt/nfs": ("hf-mount", False),
        "/mnt/efs": ("network", False),
        "/mnt/gcs": ("fuse", False),
        "/mnt/disk": ("disk", True),
        "/mnt/overlay": ("disk", True),  # FUSE over this machine's disk, kernel locks
        "/mnt/ntfs": ("disk", True),
    }
    assert kinds["/mnt/fuse"].source == "hf-mount"
    assert "fsync returns before the Hub has the bytes" in kinds["/mnt/fuse"].why
    assert "(NFS)" in kinds["/mnt/nfs"].why
    assert kinds["/mnt/disk"].why == ""


def test_a_loopback_nfs_with_real_locking_is_not_taken_for_hf_mount() -> None:
    (mount,) = parse_mounts("127.0.0.1:/export /mnt/x nfs rw,vers=3,proto=tcp 0 0")
    assert volume_of(mount).kind == "network"


def test_on_a_space_any_fuse_mount_is_a_bucket_volume() -> None:
    # Spaces reveal their volumes by no variable; they attach them through hf-mount.
    (mount,) = parse_mounts("csi-volume /data fuse rw,nosuid,nodev 0 0")
    assert volume_of(mount, "huggingface-spaces").kind == "hf-mount"
    assert volume_of(mount, "kubernetes").kind == "fuse"


def test_detect_reports_a_spaces_bucket_as_persistent_but_not_lockable(tmp_path: Path) -> None:
    bucket = tmp_path / "data"
    host = detect(SPACE, mounts=mounts(tmp_path, HF_FUSE.format(bucket)), root=tmp_path)
    assert host.name == "huggingface-spaces"
    assert host.persistent_mounts == (bucket,)
    (volume,) = host.volumes
    assert (volume.path, volume.fstype, volume.kind) == (bucket, "fuse", "hf-mount")
    assert (volume.persistent, volume.lockable) == (True, False)
    (warning,) = [w for w in host.warnings if str(bucket) in w]
    assert "hf-s3://OWNER/NAME" in warning
    assert "SQLite" in warning


def test_a_local_machine_lists_its_network_mounts_as_persistent(tmp_path: Path) -> None:
    home = tmp_path / "nfs-home"
    host = detect({}, mounts=mounts(tmp_path, EFS.format(home)), root=tmp_path)
    assert host.persistent_mounts == ()  # nothing singled out on a local machine
    assert [(v.path, v.kind, v.persistent, v.lockable) for v in host.volumes] == [
        (home, "network", True, False)
    ]


# -- the lock probe, on real directories -----------------------------------------------------


def test_the_probe_passes_on_a_local_disk_and_leaves_nothing(tmp_path: Path) -> None:
    assert probe_locking(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_a_lock_that_holds_nothing_is_caught_by_the_second_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-in: a file system that accepts flock and fcntl locks and holds nothing (no
    # directory here behaves so). The second process is real and unpatched.
    monkeypatch.setattr(paths_module, "_hold_locks", lambda fd: None)
    problem = probe_locking(tmp_path)
    assert problem == "another process took an flock lock that this one held"
    assert list(tmp_path.iterdir()) == []


def test_a_rename_another_process_cannot_see_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stand-in: a rename that leaves the old name in place (a stale directory listing).
    monkeypatch.setattr(paths_module, "_rename", lambda a, b: b.write_bytes(a.read_bytes()))
    assert probe_locking(tmp_path) == (
        "a renamed file still shows under its old name to another process"
    )


def test_the_probe_runs_once_per_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert probe_locking(tmp_path) is None
    monkeypatch.setattr(paths_module, "_hold_locks", lambda fd: None)
    assert probe_locking(tmp_path) is None  # cached: the second process did not run again
    other = tmp_path / "other"
    other.mkdir()
    assert probe_locking(other) is not None


# -- where the local tier may go ---------------------------------------------------------------


def test_a_space_keeps_its_local_tier_off_the_bucket_but_caches_there(box: Path) -> None:
    bucket = box / "data"
    table = mounts(box, HF_FUSE.format(bucket))
    host = detect(SPACE, mounts=table, root=box)
    choice = data_dir(Settings.load({}), mounts=table, host=host)
    assert choice.path == box / "home" / ".local" / "share" / "cargohold"
    (skipped,) = [why for p, _, why in choice.rejected if p == bucket / ".cargohold"]
    assert "hf-mount" in skipped
    assert "local tier needs a local disk" in skipped
    assert not (bucket / ".cargohold").exists(), "not even a probe file was written there"
    # Caches are read-mostly and may be lost: the bucket is a fine, persistent place.
    cache = cache_dir(mounts=table, host=host)
    assert cache.path == bucket / ".cache" / "cargohold"
    assert cache.persistent


@pytest.mark.parametrize("line", [HF_FUSE, HF_NFS])
def test_a_data_dir_set_on_a_bucket_volume_is_refused_with_the_fix(box: Path, line: str) -> None:
    bucket = box / "data"
    bucket.mkdir()
    table = mounts(box, line.format(bucket))
    with pytest.raises(ConfigError) as caught:
        data_dir(Settings.load({}, data_dir=bucket / "hold"), mounts=table)
    message = str(caught.value)
    assert str(bucket / "hold") in message
    assert "CARGOHOLD_DATA_DIR" in message
    assert "container's own disk" in message
    assert "CARGOHOLD_REMOTE=hf-s3://OWNER/NAME" in message
    # Refused even though locks would pass a probe there (hf-mount keeps them locally):
    # the probe cannot prove fsync, and nothing was written to try.
    assert not (bucket / "hold").exists()


def test_a_data_dir_set_on_a_network_volume_is_used_when_the_probe_passes(
    box: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cargohold.paths")
    efs = box / "efs"
    table = mounts(box, EFS.format(efs))
    choice = data_dir(Settings.load({}, data_dir=efs / "hold"), mounts=table)
    assert choice.path == efs / "hold"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("let no other machine use this directory" in m for m in warned)


def test_a_data_dir_set_on_a_network_volume_whose_locks_fail_is_refused(
    box: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths_module, "_hold_locks", lambda fd: None)  # as above: a stand-in
    efs = box / "efs"
    table = mounts(box, EFS.format(efs))
    with pytest.raises(ConfigError) as caught:
        data_dir(Settings.load({}, data_dir=efs / "hold"), mounts=table)
    assert "took an flock lock that this one held" in str(caught.value)
    assert "point CARGOHOLD_DATA_DIR at a local disk" in str(caught.value)


def test_a_network_volume_the_host_reveals_is_passed_over_for_the_local_tier(box: Path) -> None:
    efs = box / "efs"
    table = mounts(box, EFS.format(efs))
    host = detect({"AWS_LAMBDA_FUNCTION_NAME": "fn"}, mounts=table, root=box)
    assert host.persistent_mounts == (efs,)
    choice = data_dir(Settings.load({}), mounts=table, host=host)
    assert not choice.path.is_relative_to(efs)
    assert any(p == efs / ".cargohold" and "network" in why for p, _, why in choice.rejected)


# -- container roots and local FUSE disks are not bucket volumes -------------------------------


def only(base: Path, *lines: str) -> Path:
    """A mount table of exactly ``lines`` (no ext4 root)."""
    path = base / "mounts"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_a_rootless_podman_root_holds_the_local_tier(box: Path) -> None:
    choice = data_dir(Settings.load({}), mounts=only(box, PODMAN_ROOT))
    assert choice.path == box / "home" / ".local" / "share" / "cargohold"


def test_a_fuseblk_disk_holds_the_local_tier(box: Path) -> None:
    ntfs = f"/dev/sdb1 {box / 'home'} fuseblk rw,relatime,user_id=0,group_id=0 0 0"
    choice = data_dir(Settings.load({}), mounts=mounts(box, ntfs))
    assert choice.path == box / "home" / ".local" / "share" / "cargohold"


def test_a_9p_container_root_is_probed_and_holds_the_local_tier(box: Path) -> None:
    (root,) = parse_mounts(GVISOR_ROOT)
    assert volume_of(root).kind == "network"  # so it is probed, not assumed
    home = box / "home" / ".local" / "share" / "cargohold"
    choice = data_dir(Settings.load({}), mounts=only(box, GVISOR_ROOT))
    assert choice.path == home
    # The probe ran there (locks hold on this real directory) and cached its pass.
    assert paths_module._lock_probes[home.resolve()] is None


def test_a_default_candidate_on_an_unknown_fuse_mount_is_probed(
    box: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cargohold.paths")
    home = box / "home"
    table = mounts(box, f"ana@files:/home/ana {home} fuse.sshfs rw,nosuid,nodev 0 0")
    local = detect({}, mounts=table, root=box)  # a local machine: no persistent mount first
    choice = data_dir(Settings.load({}), mounts=table, host=local)
    # sshfs here is a stand-in line over a real local directory, where the probe passes:
    # so the candidate is accepted, with a note, instead of being refused untouched.
    assert choice.path == home / ".local" / "share" / "cargohold"
    assert any("file locks held between processes here" in r.getMessage() for r in caplog.records)


def test_a_default_candidate_on_fuse_whose_locks_fail_is_passed_over(
    box: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paths_module, "_hold_locks", lambda fd: None)  # a stand-in, as above
    home = box / "home"
    table = mounts(box, f"ana@files:/home/ana {home} fuse.sshfs rw,nosuid,nodev 0 0")
    local = detect({}, mounts=table, root=box)  # a local machine: no persistent mount first
    choice = data_dir(Settings.load({}), mounts=table, host=local)
    assert choice.path == box / "work" / ".cargohold"  # the next candidate, on ext4
    (why,) = [w for p, _, w in choice.rejected if p == home / ".local" / "share" / "cargohold"]
    assert "a probe found that another process took an flock lock" in why


# -- the probe in a frozen or embedded app ------------------------------------------------------


def test_a_frozen_app_does_not_run_itself_to_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PyInstaller sets sys.frozen, and nothing here is a frozen app: the attribute is set by
    # hand. Spawning would start the app again, so the probe fails with the fix instead.
    monkeypatch.setattr("sys.frozen", True, raising=False)
    problem = probe_locking(tmp_path)
    assert problem is not None
    assert "is not a Python interpreter (a frozen or embedded app)" in problem
    assert "set CARGOHOLD_DATA_DIR to a local path" in problem
    assert list(tmp_path.iterdir()) == []


def test_an_embedded_interpreter_does_not_run_its_server_to_probe(
    box: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under uWSGI sys.executable is the server itself (no uWSGI here: the path is set).
    monkeypatch.setattr("sys.executable", "/usr/local/bin/uwsgi")
    efs = box / "efs"
    with pytest.raises(ConfigError) as caught:
        data_dir(Settings.load({}, data_dir=efs / "hold"), mounts=mounts(box, EFS.format(efs)))
    assert "/usr/local/bin/uwsgi is not a Python interpreter" in str(caught.value)
    assert "point CARGOHOLD_DATA_DIR at a local disk" in str(caught.value)
