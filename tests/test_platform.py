"""Host detection: hosts are simulated with environment variables, a fake /proc/mounts and
a fake root for the container marker files."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from cargohold.platform import (
    Platform,
    default_shutdown_grace,
    detect,
    mount_for,
    read_mounts,
)
from testsupport.hosts import clear_host


@pytest.fixture(autouse=True)
def no_host(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_host(monkeypatch)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A file system root without /.dockerenv or /run/.containerenv."""
    path = tmp_path / "root"
    path.mkdir()
    return path


def write_mounts(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture
def no_mounts(tmp_path: Path) -> Path:
    return write_mounts(tmp_path / "mounts", "/dev/vda / ext4 rw,relatime 0 0")


def test_a_plain_machine_is_local(root: Path, no_mounts: Path) -> None:
    host = detect(mounts=no_mounts, root=root)
    assert host.name == "local"
    assert host.evidence  # says why: nothing was found
    assert host.persistent_mounts == ()
    assert host.warnings == ()
    assert host.shutdown_signal == signal.SIGTERM


@pytest.mark.parametrize(
    ("env", "name", "sig", "grace"),
    [
        ({"SPACE_ID": "ana/demo", "SPACE_HOST": "ana-demo.hf.space"}, "huggingface-spaces", signal.SIGTERM, 10.0),
        ({"RAILWAY_PROJECT_ID": "p", "RAILWAY_SERVICE_ID": "s"}, "railway", signal.SIGTERM, 0.0),
        ({"FLY_APP_NAME": "demo", "FLY_MACHINE_ID": "m1"}, "fly", signal.SIGINT, 5.0),
        ({"RENDER": "true", "RENDER_SERVICE_ID": "srv-1"}, "render", signal.SIGTERM, 30.0),
        ({"K_SERVICE": "demo", "K_REVISION": "demo-001"}, "cloud-run", signal.SIGTERM, 10.0),
        ({"CLOUD_RUN_JOB": "nightly"}, "cloud-run", signal.SIGTERM, 10.0),
        ({"AWS_LAMBDA_FUNCTION_NAME": "fn", "LAMBDA_TASK_ROOT": "/var/task"}, "aws-lambda", signal.SIGTERM, 0.5),
        ({"MODAL_TASK_ID": "ta-1", "MODAL_IS_REMOTE": "1"}, "modal", signal.SIGINT, 30.0),
        ({"DYNO": "web.1"}, "heroku", signal.SIGTERM, 30.0),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "kubernetes", signal.SIGTERM, 30.0),
        ({"container": "podman"}, "docker", signal.SIGTERM, 10.0),
    ],
)  # fmt: skip
def test_each_host_from_its_variables(
    env: dict[str, str], name: str, sig: signal.Signals, grace: float, root: Path, no_mounts: Path
) -> None:
    host = detect(env, mounts=no_mounts, root=root)
    assert (host.name, host.shutdown_signal, host.grace_seconds) == (name, sig, grace)
    for variable in env:
        assert any(variable in item for item in host.evidence), host.evidence


def test_env_defaults_to_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, root: Path, no_mounts: Path
) -> None:
    monkeypatch.setenv("FLY_APP_NAME", "demo")
    assert detect(mounts=no_mounts, root=root).name == "fly"


def test_one_stray_space_variable_is_not_a_space(root: Path, no_mounts: Path) -> None:
    # SPACE_ID alone often sits in a developer's .env file.
    assert detect({"SPACE_ID": "ana/demo"}, mounts=no_mounts, root=root).name == "local"
    spaces = detect({"SPACE_ID": "ana/demo", "SYSTEM": "spaces"}, mounts=no_mounts, root=root)
    assert spaces.name == "huggingface-spaces"


def test_knative_inside_kubernetes_is_not_cloud_run(root: Path, no_mounts: Path) -> None:
    env = {"K_SERVICE": "demo", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    assert detect(env, mounts=no_mounts, root=root).name == "kubernetes"


def test_the_most_specific_host_wins(root: Path, no_mounts: Path) -> None:
    env = {"SPACE_ID": "a/b", "SPACE_HOST": "a-b.hf.space", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    (root / ".dockerenv").touch()
    assert detect(env, mounts=no_mounts, root=root).name == "huggingface-spaces"


@pytest.mark.parametrize("marker", [".dockerenv", "run/.containerenv"])
def test_container_marker_files_mean_docker(marker: str, root: Path, no_mounts: Path) -> None:
    (root / marker).parent.mkdir(parents=True, exist_ok=True)
    (root / marker).touch()
    host = detect({}, mounts=no_mounts, root=root)
    assert host.name == "docker"
    assert host.evidence == (f"/{marker} exists",)
    assert any("no persistent volume" in w for w in host.warnings)


def test_railway_without_drain_warns_and_still_budgets(root: Path, no_mounts: Path) -> None:
    host = detect({"RAILWAY_SERVICE_ID": "s"}, mounts=no_mounts, root=root)
    assert host.grace_seconds == 0
    assert any("RAILWAY_DEPLOYMENT_DRAINING_SECONDS" in w for w in host.warnings)
    assert default_shutdown_grace(host) == 1.0


def test_railway_drain_seconds_set_the_grace(root: Path, no_mounts: Path) -> None:
    env = {"RAILWAY_SERVICE_ID": "s", "RAILWAY_DEPLOYMENT_DRAINING_SECONDS": "20"}
    host = detect(env, mounts=no_mounts, root=root)
    assert host.grace_seconds == 20.0
    assert not any("RAILWAY_DEPLOYMENT_DRAINING_SECONDS" in w for w in host.warnings)
    assert 0 < default_shutdown_grace(host) < 20.0


def test_railway_drain_seconds_that_do_not_parse(root: Path, no_mounts: Path) -> None:
    env = {"RAILWAY_SERVICE_ID": "s", "RAILWAY_DEPLOYMENT_DRAINING_SECONDS": "soon"}
    host = detect(env, mounts=no_mounts, root=root)
    assert host.grace_seconds == 0
    assert any("'soon'" in w for w in host.warnings)


def test_railway_volume_is_persistent(root: Path, no_mounts: Path, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    env = {"RAILWAY_SERVICE_ID": "s", "RAILWAY_VOLUME_MOUNT_PATH": str(volume)}
    host = detect(env, mounts=no_mounts, root=root)
    assert host.persistent_mounts == (volume,)
    assert not any("no persistent volume" in w for w in host.warnings)


def test_cloud_run_disk_is_memory(root: Path, no_mounts: Path) -> None:
    host = detect({"K_SERVICE": "demo"}, mounts=no_mounts, root=root)
    assert host.memory_disk
    assert any("memory" in w for w in host.warnings)


def test_lambda_budget_is_under_a_second_and_tmp_is_named(root: Path, no_mounts: Path) -> None:
    host = detect({"AWS_LAMBDA_FUNCTION_NAME": "fn"}, mounts=no_mounts, root=root)
    assert 0 < default_shutdown_grace(host) < host.grace_seconds < 1
    assert any("flush()" in w and "10 GB" in w for w in host.warnings)
    assert Path.home() not in host.writable_dirs


@pytest.mark.parametrize("grace", [0.5, 5.0, 10.0, 30.0, 300.0])
def test_the_budget_ends_before_the_kill(grace: float, root: Path, no_mounts: Path) -> None:
    host = dataclasses.replace(detect({}, mounts=no_mounts, root=root), grace_seconds=grace)
    assert 0 < default_shutdown_grace(host) < grace


def test_platform_is_frozen(root: Path, no_mounts: Path) -> None:
    host = detect({}, mounts=no_mounts, root=root)
    assert isinstance(host, Platform)
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.grace_seconds = 99  # type: ignore[misc]


# -- mounts -------------------------------------------------------------------------------


def test_volumes_are_found_in_the_mount_table(tmp_path: Path, root: Path) -> None:
    volume, bucket, efs = tmp_path / "volume", tmp_path / "bucket", tmp_path / "efs"
    config_file = tmp_path / "config.yaml"
    config_file.touch()
    mounts = write_mounts(
        tmp_path / "mounts",
        "overlay / overlay rw,relatime 0 0",
        "proc /proc proc rw 0 0",
        "tmpfs /dev/shm tmpfs rw 0 0",
        f"tmpfs {tmp_path}/ram tmpfs rw 0 0",
        "/dev/sda1 /etc/hosts ext4 rw 0 0",
        "/dev/sdb /usr/share/models ext4 rw 0 0",
        f"/dev/sdc {tmp_path}/readonly ext4 ro,relatime 0 0",
        f"/dev/sdd {config_file} ext4 rw 0 0",
        f"/dev/vdb {volume} ext4 rw,relatime 0 0",
        f"gcsfuse {bucket} fuse.gcsfuse rw,nosuid 0 0",
        f"fs-1.efs:/ {efs} nfs4 rw,vers=4.1 0 0",
    )
    host = detect({"FLY_APP_NAME": "demo"}, mounts=mounts, root=root)
    assert host.persistent_mounts == (volume, bucket, efs)


def test_a_local_machine_singles_out_no_mount(tmp_path: Path, root: Path) -> None:
    mounts = write_mounts(tmp_path / "mounts", f"/dev/sdb1 {tmp_path}/home ext4 rw 0 0")
    assert detect({}, mounts=mounts, root=root).persistent_mounts == ()


def test_kubernetes_node_disk_mounts_are_not_persistent(tmp_path: Path, root: Path) -> None:
    # An emptyDir comes from the node's disk, like /etc/hosts; a PVC from its own device.
    empty_dir, claim = tmp_path / "scratch", tmp_path / "data"
    lines = (
        "/dev/sda1 /etc/hosts ext4 rw 0 0",
        f"/dev/sda1 {empty_dir} ext4 rw 0 0",
        f"/dev/rbd0 {claim} ext4 rw 0 0",
    )
    mounts = write_mounts(tmp_path / "mounts", *lines)
    k8s = detect({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, mounts=mounts, root=root)
    assert k8s.persistent_mounts == (claim,)
    # Under plain Docker the same mount is a named volume, which outlives the container.
    docker = detect({"container": "docker"}, mounts=mounts, root=root)
    assert docker.persistent_mounts == (empty_dir, claim)


def test_spaces_persistent_storage_at_data(tmp_path: Path, root: Path) -> None:
    mounts = write_mounts(tmp_path / "mounts", "storage /data somefs rw 0 0")
    env = {"SPACE_ID": "a/b", "SPACE_HOST": "a-b.hf.space"}
    host = detect(env, mounts=mounts, root=root)
    assert host.persistent_mounts == (Path("/data"),)
    without = detect(env, mounts=write_mounts(tmp_path / "none", ""), root=root)
    assert any("no persistent volume" in w for w in without.warnings)


def test_mount_table_escapes_and_a_missing_table(tmp_path: Path) -> None:
    mounts = write_mounts(tmp_path / "mounts", r"/dev/vdb /mnt/my\040volume ext4 rw 0 0", "junk")
    (only,) = read_mounts(mounts)
    assert only.point == Path("/mnt/my volume")
    assert only.options == frozenset({"rw"})
    assert read_mounts(tmp_path / "absent") == ()


def test_mount_for_finds_the_deepest_mount(tmp_path: Path) -> None:
    lines = ("/dev/vda / ext4 rw 0 0", f"tmpfs {tmp_path} tmpfs rw 0 0")
    table = read_mounts(write_mounts(tmp_path / "mounts", *lines))
    inner = mount_for(tmp_path / "a" / "b", table)
    assert inner is not None
    assert inner.ram_backed
    outer = mount_for("/usr", table)
    assert outer is not None
    assert outer.fstype == "ext4"
    assert mount_for("/usr", ()) is None


def test_writable_dirs_are_directories_we_may_write(root: Path, no_mounts: Path) -> None:
    host = detect({}, mounts=no_mounts, root=root)
    assert host.writable_dirs
    assert all(p.is_dir() and os.access(p, os.W_OK) for p in host.writable_dirs)
