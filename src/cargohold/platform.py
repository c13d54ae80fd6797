"""Which host this process runs on, and what that host promises.

:func:`detect` reads the host's environment variables (and two marker files that container
runtimes leave) and returns a :class:`Platform`: the host's name with the evidence for it,
the signal it stops a container with and how long it waits before ``SIGKILL``, the
persistent mounts it reveals, the volumes it has (with whether file locks and ``fsync`` can
be trusted on each: not on network file systems, FUSE mounts, or the Hugging Face bucket
volumes hf-mount attaches to Spaces), the directories it documents as writable, and
warnings about what it will do to unsynced data. :func:`default_shutdown_grace` turns that into the budget
the shutdown flush may spend.

Nothing is read at import: every call looks at the environment as it is then. This module
imports only :mod:`cargohold.config`; :mod:`cargohold.paths` builds on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import parse_duration

__all__ = [
    "FsKind",
    "HostName",
    "Mount",
    "Platform",
    "Volume",
    "default_shutdown_grace",
    "detect",
    "mount_for",
    "parse_mounts",
    "read_mounts",
    "volume_of",
]

log = logging.getLogger("cargohold.platform")

HostName = Literal[
    "huggingface-spaces",
    "railway",
    "fly",
    "render",
    "cloud-run",
    "aws-lambda",
    "modal",
    "heroku",
    "kubernetes",
    "docker",
    "local",
]

#: What a mount is, as a home for app data: a ``disk`` (block device, overlay), ``memory``
#: (tmpfs, ramfs), a ``network`` file system (NFS, SMB, Ceph, ...), a ``fuse`` mount (a
#: user-space file system: gcsfuse, s3fs, virtiofs, ...) or ``hf-mount`` (a Hugging Face
#: bucket or repo mounted by hf-mount, as Spaces attach their volumes).
FsKind = Literal["disk", "memory", "network", "fuse", "hf-mount"]

# The flush may spend this share of the host's grace period; the rest is left for the app's
# own shutdown (closing servers, its handlers) and for the process to exit before SIGKILL.
_BUDGET_SHARE = 0.8
# When the host gives no grace at all (Railway's default), a flush still gets this much: the
# kill may come later than promised, and a partial flush beats none.
_MIN_BUDGET = 1.0


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of ``/proc/mounts``."""

    device: str
    point: Path
    fstype: str
    options: frozenset[str]

    @property
    def ram_backed(self) -> bool:
        """True for file systems whose bytes live in memory (tmpfs, ramfs)."""
        return self.fstype in ("tmpfs", "ramfs")


@dataclass(frozen=True, slots=True)
class Volume:
    """A writable mount that may hold app data, and whether it can hold a database.

    ``persistent``: it survives a restart or redeploy of the container.
    ``lockable``: a file lock taken by one process holds off the others that may open the
    same files, and ``fsync`` returning means the bytes are kept. True only on a local disk
    or memory; False on network and FUSE file systems, where locks may hold only on this
    machine (while other machines mount the same files) and ``fsync`` may return before the
    bytes reach the server. ``why`` says which, for a volume that is not lockable.
    """

    path: Path
    fstype: str
    source: str
    kind: FsKind
    persistent: bool
    lockable: bool
    why: str = ""


@dataclass(frozen=True, slots=True)
class Platform:
    """What :func:`detect` found. Immutable; every sequence is a tuple.

    ``grace_seconds`` is the time between the shutdown signal and ``SIGKILL`` as the host
    documents it (or as configured, where the host exposes its setting).
    ``memory_disk`` is True where the host's own disk is RAM (Cloud Run): every byte written
    outside a mounted volume counts against the memory limit.
    """

    name: HostName
    evidence: tuple[str, ...]
    shutdown_signal: signal.Signals
    grace_seconds: float
    persistent_mounts: tuple[Path, ...]
    writable_dirs: tuple[Path, ...]
    memory_disk: bool
    warnings: tuple[str, ...]
    #: Every writable volume found (persistent or not), with what it can be trusted with.
    volumes: tuple[Volume, ...] = ()


@dataclass(frozen=True, slots=True)
class _Host:
    name: HostName
    # Each marker is (variable, required value or None for "set and non-empty").
    markers: tuple[tuple[str, str | None], ...]
    # How many markers must be present: one user-set variable in a local .env file (SPACE_ID
    # is a common one) must not make a laptop look like a Space.
    need: int
    signal: signal.Signals
    grace: float


# Most specific first: Spaces run on Kubernetes, and most hosts run containers.
_HOSTS: tuple[_Host, ...] = (
    _Host(
        "huggingface-spaces",
        (
            ("SPACE_ID", None),
            ("SPACE_HOST", None),
            ("SPACE_REPO_NAME", None),
            ("SPACE_AUTHOR_NAME", None),
            ("SYSTEM", "spaces"),
        ),
        2,
        signal.SIGTERM,
        # Spaces do not document their grace period; assume Docker's default rather than
        # Kubernetes' longer one, so the flush ends before an unknown kill.
        10.0,
    ),
    _Host(
        "railway",
        (
            ("RAILWAY_PROJECT_ID", None),
            ("RAILWAY_SERVICE_ID", None),
            ("RAILWAY_ENVIRONMENT_ID", None),
            ("RAILWAY_DEPLOYMENT_ID", None),
        ),
        1,
        signal.SIGTERM,
        0.0,  # unless RAILWAY_DEPLOYMENT_DRAINING_SECONDS says otherwise
    ),
    _Host(
        "fly",
        (("FLY_APP_NAME", None), ("FLY_MACHINE_ID", None), ("FLY_ALLOC_ID", None)),
        1,
        signal.SIGINT,  # fly.toml kill_signal default
        5.0,  # fly.toml kill_timeout default
    ),
    _Host(
        "render",
        (("RENDER", "true"), ("RENDER_SERVICE_ID", None), ("RENDER_INSTANCE_ID", None)),
        1,
        signal.SIGTERM,
        30.0,
    ),
    _Host(
        "cloud-run",
        (
            ("K_SERVICE", None),
            ("K_REVISION", None),
            ("CLOUD_RUN_JOB", None),
            ("CLOUD_RUN_EXECUTION", None),
        ),
        1,
        signal.SIGTERM,
        10.0,
    ),
    _Host(
        "aws-lambda",
        (("AWS_LAMBDA_FUNCTION_NAME", None), ("LAMBDA_TASK_ROOT", None)),
        1,
        signal.SIGTERM,  # sent only when an extension is registered
        # The Shutdown phase lasts 0 ms without extensions, 500 ms with internal ones and
        # 2 s with external ones: assume the short case that still delivers a signal.
        0.5,
    ),
    _Host(
        "modal",
        (("MODAL_TASK_ID", None), ("MODAL_IMAGE_ID", None), ("MODAL_IS_REMOTE", "1")),
        1,
        signal.SIGINT,  # Modal interrupts a container it preempts or stops
        30.0,
    ),
    _Host("heroku", (("DYNO", None),), 1, signal.SIGTERM, 30.0),
    _Host(
        "kubernetes",
        (("KUBERNETES_SERVICE_HOST", None), ("KUBERNETES_PORT", None)),
        1,
        signal.SIGTERM,
        30.0,  # terminationGracePeriodSeconds default; a pod spec may change it unseen
    ),
    _Host("docker", (("container", None),), 1, signal.SIGTERM, 10.0),  # `docker stop` default
)
_LOCAL = _Host("local", (), 0, signal.SIGTERM, 10.0)  # nothing kills us; a generous default

# Files a container runtime creates in every container it starts (Docker, Podman).
_CONTAINER_MARKERS = (".dockerenv", "run/.containerenv")

# File systems a persistent volume can have: block devices, network shares, FUSE buckets.
_VOLUME_FSTYPES = frozenset(
    {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "jfs", "reiserfs",
        "vfat", "exfat", "ntfs", "ntfs3",
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs",
        "virtiofs", "9p", "fuse",
    }
)  # fmt: skip
# Where a mount is part of the system or the runtime, never the app's volume.
_SYSTEM_PREFIXES = tuple(
    Path(p)
    for p in (
        "/proc", "/sys", "/dev", "/run", "/var/run", "/boot", "/etc", "/usr", "/bin", "/sbin",
        "/lib", "/lib64", "/snap", "/nix", "/var/lib/docker", "/var/lib/kubelet",
        "/var/lib/containers",
    )
)  # fmt: skip
# Files the runtime bind-mounts from the node's own disk into each container.
_RUNTIME_FILES = frozenset(Path(p) for p in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"))

# File systems whose files live on a server other machines reach too: a lock may hold only
# on this machine, and fsync's promise is the server's.
_NETWORK_FSTYPES = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "9p",
        "afs", "beegfs", "wekafs", "orangefs",
    }
)  # fmt: skip
# hf-mount names its FUSE mounts "hf-mount" (fuser's FSName; fstype "fuse", no subtype) and
# mounts its NFS server from loopback with "nolock" (the kernel then keeps locks local and
# shows local_lock=all): see docs/huggingface.md, "Bucket volumes on Spaces".
_HF_MOUNT_SOURCE = "hf-mount"
_LOOPBACK_SOURCES = ("127.0.0.1:", "localhost:", "[::1]:")
_LOCAL_LOCKS = frozenset({"nolock", "local_lock=all"})
# FUSE file systems over this machine's own disk, with the kernel's locks and a real fsync:
# rootless Podman's container root (fuse-overlayfs) and NTFS/exFAT through ntfs-3g (fuseblk).
_LOCAL_FUSE = frozenset({"fuse.fuse-overlayfs", "fuseblk"})
# FUSE mounts of an object store (a bucket): like hf-mount, locks there may pass a probe
# (the kernel keeps them in this machine) while fsync does not reach the bucket.
_OBJECT_STORE_FUSE = frozenset(
    {
        "fuse.gcsfuse", "fuse.s3fs", "fuse.goofys", "fuse.geesefs", "fuse.mountpoint-s3",
        "fuse.rclone", "fuse.blobfuse", "fuse.blobfuse2",
    }
)  # fmt: skip


def detect(
    env: Mapping[str, str] | None = None,
    /,
    *,
    mounts: str | os.PathLike[str] = "/proc/mounts",
    root: str | os.PathLike[str] = "/",
) -> Platform:
    """Identify the host from ``env`` (default ``os.environ``), ``mounts`` and marker files.

    Never raises for a strange environment: an unreadable mounts file means no mounts, an
    unparsable ``RAILWAY_DEPLOYMENT_DRAINING_SECONDS`` means Railway's default, and each
    such fallback is stated in ``warnings``. ``root`` is where the container marker files
    (``/.dockerenv``, ``/run/.containerenv``) are looked for.
    """
    environ = os.environ if env is None else env
    host, evidence = _identify(environ, Path(root))
    grace, warnings = _grace(host, environ)
    table = read_mounts(mounts)
    persistent = _persistent_mounts(host.name, environ, table)
    memory_disk = host.name == "cloud-run"
    volumes = _volumes(host.name, table, persistent)
    warnings += _host_warnings(host.name, grace, persistent)
    warnings += _volume_warnings(volumes)
    found = Platform(
        name=host.name,
        evidence=evidence,
        shutdown_signal=host.signal,
        grace_seconds=grace,
        persistent_mounts=persistent,
        writable_dirs=_writable_dirs(host.name, persistent),
        memory_disk=memory_disk,
        warnings=tuple(warnings),
        volumes=volumes,
    )
    log.debug("cargohold: host %s (%s)", found.name, "; ".join(found.evidence))
    return found


def default_shutdown_grace(host: Platform | None = None) -> float:
    """Seconds the shutdown flush may spend on this host (``detect()`` when ``host`` is None).

    Always positive and, when the host grants a grace period, shorter than it (80 %), so the
    flush ends before ``SIGKILL`` with time left for the app's own shutdown. Where the host
    grants none (Railway without ``RAILWAY_DEPLOYMENT_DRAINING_SECONDS``) it is 1 s, and the
    host's warnings say how to get a real grace period.
    """
    host = host if host is not None else detect()
    if host.grace_seconds <= 0:
        return _MIN_BUDGET
    return round(host.grace_seconds * _BUDGET_SHARE, 3)


def read_mounts(path: str | os.PathLike[str] = "/proc/mounts") -> tuple[Mount, ...]:
    """The mount table in the file at ``path`` (:func:`parse_mounts`); empty where there is
    none (macOS, Windows)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    return parse_mounts(text)


def parse_mounts(text: str) -> tuple[Mount, ...]:
    """The mounts in ``text``, in ``/proc/mounts`` format, in order; malformed lines are
    skipped. Paths are unescaped (the kernel writes a space as ``\\040``)."""
    table: list[Mount] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, point, fstype, options = (_unescape(f) for f in fields[:4])
        table.append(Mount(device, Path(point), fstype, frozenset(options.split(","))))
    return tuple(table)


def volume_of(mount: Mount, host: HostName = "local", *, persistent: bool = False) -> Volume:
    """What ``mount`` is as a home for app data on ``host``, and whether a database can live
    there (:attr:`Volume.lockable`). Decided from the mount line alone: nothing is touched.

    On a Hugging Face Space every FUSE or NFS mount is taken for a bucket volume, since
    Spaces attach volumes through hf-mount and reveal them by no variable.
    """
    kind, why = _kind(mount, host)
    return Volume(
        path=mount.point,
        fstype=mount.fstype,
        source=mount.device,
        kind=kind,
        persistent=persistent,
        lockable=kind in ("disk", "memory"),
        why=why,
    )


def mount_for(path: str | os.PathLike[str], mounts: tuple[Mount, ...]) -> Mount | None:
    """The mount that holds ``path`` (symlinks resolved): the deepest mount point above it,
    and of several at that point the last, which hides the others."""
    target = Path(path).resolve()
    best: Mount | None = None
    for mount in mounts:
        if _within(target, mount.point) and (
            best is None or len(mount.point.parts) >= len(best.point.parts)
        ):
            best = mount
    return best


def _kind(mount: Mount, host: HostName) -> tuple[FsKind, str]:
    fstype, source = mount.fstype, mount.device
    if fstype in _LOCAL_FUSE:
        return "disk", ""
    fuse = fstype in ("fuse", "virtiofs") or fstype.startswith("fuse.")
    loopback_nfs = (
        fstype in ("nfs", "nfs4")
        and source.startswith(_LOOPBACK_SOURCES)
        and bool(mount.options & _LOCAL_LOCKS)
    )
    hf_fuse = fuse and (source == _HF_MOUNT_SOURCE or fstype == "fuse.hf-mount")
    on_space = host == "huggingface-spaces" and (fuse or fstype in ("nfs", "nfs4"))
    if hf_fuse or loopback_nfs or on_space:
        how = "FUSE" if fuse else "NFS"
        return "hf-mount", (
            f"a Hugging Face bucket mounted by hf-mount ({how}): it has no file locking "
            "beyond this container, fsync returns before the Hub has the bytes (they upload "
            "on close or after a debounce), reads can be seconds stale, and the last writer "
            "wins; SQLite there fails with 'database is locked' or corrupts"
        )
    if mount.ram_backed:
        return "memory", ""
    if fstype in _NETWORK_FSTYPES or fstype.startswith("nfs"):
        return "network", (
            f"a network file system ({fstype}): file locks and fsync are only as good as "
            "its server and mount options, and other machines may open the same files"
        )
    if fuse:
        return "fuse", (
            f"a FUSE file system ({fstype}): a user-space program decides what file locks "
            "and fsync mean, and object-store mounts keep neither promise"
        )
    return "disk", ""


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _identify(environ: Mapping[str, str], root: Path) -> tuple[_Host, tuple[str, ...]]:
    for host in _HOSTS:
        found = [
            f"{name}={environ[name]!r}"
            for name, wanted in host.markers
            if environ.get(name) and (wanted is None or environ[name].strip().lower() == wanted)
        ]
        if host.name == "cloud-run" and environ.get("KUBERNETES_SERVICE_HOST"):
            continue  # K_SERVICE inside a cluster is Knative, not Cloud Run
        if host.name == "docker":
            found += [f"/{m} exists" for m in _CONTAINER_MARKERS if (root / m).exists()]
        if found and len(found) >= host.need:
            return host, tuple(found)
    return _LOCAL, ("no host's variables or container markers were found",)


def _grace(host: _Host, environ: Mapping[str, str]) -> tuple[float, list[str]]:
    if host.name != "railway":
        return host.grace, []
    raw = environ.get("RAILWAY_DEPLOYMENT_DRAINING_SECONDS")
    if raw is None:
        return host.grace, []
    try:
        return parse_duration(raw), []
    except ValueError:
        return host.grace, [
            f"RAILWAY_DEPLOYMENT_DRAINING_SECONDS={raw!r} is not a number of seconds, so "
            "Railway's default drain of 0 s is assumed"
        ]


def _persistent_mounts(
    name: HostName, environ: Mapping[str, str], table: tuple[Mount, ...]
) -> tuple[Path, ...]:
    if name == "local":
        return ()  # every disk of a local machine persists; none needs singling out
    found: list[Path] = []
    volume = environ.get("RAILWAY_VOLUME_MOUNT_PATH", "").strip()
    if name == "railway" and volume:
        found.append(Path(volume))
    if name == "huggingface-spaces":
        # Spaces mount persistent storage at /data, whatever its file system: the former
        # persistent disk, and now usually a bucket volume (see volume_of: not lockable).
        found += [m.point for m in table if m.point == Path("/data") and not m.ram_backed]
    # On Kubernetes a mount from the node's own disk (the one /etc/hosts comes from) is an
    # emptyDir or hostPath: a rescheduled pod loses it. Under plain Docker the same kind of
    # mount is a named volume or a bind mount, which survive the container.
    node_disks = (
        {m.device for m in table if m.point in _RUNTIME_FILES}
        if name in ("kubernetes", "huggingface-spaces")
        else set()
    )
    found += [m.point for m in table if _is_volume(m) and m.device not in node_disks]
    return tuple(dict.fromkeys(found))


def _volumes(
    name: HostName, table: tuple[Mount, ...], persistent: tuple[Path, ...]
) -> tuple[Volume, ...]:
    """Each writable volume in the table (the last mount at a point hides the others), then
    each persistent path the environment names that the table does not show."""
    by_point = {m.point: m for m in table if _is_volume(m)}
    found = [
        volume_of(m, name, persistent=m.point in persistent or name == "local")
        for m in by_point.values()
    ]
    for path in persistent:
        if path not in by_point:
            below = mount_for(path, table)  # what holds it decides what it can be trusted with
            found.append(
                Volume(path, "", "", "disk", True, True)
                if below is None
                else dataclasses.replace(volume_of(below, name, persistent=True), path=path)
            )
    return tuple(found)


def _volume_warnings(volumes: tuple[Volume, ...]) -> list[str]:
    return [
        f"{v.path} is {v.why}: keep SQLite databases and cargohold's local tier on the "
        "container's own disk, and use the bucket as the remote (hf-s3://OWNER/NAME)"
        for v in volumes
        if v.kind == "hf-mount"
    ]


def _is_volume(mount: Mount) -> bool:
    fstype_ok = mount.fstype in _VOLUME_FSTYPES or mount.fstype.startswith("fuse.")
    if not fstype_ok or "ro" in mount.options or mount.point == Path("/"):
        return False
    if any(_within(mount.point, p) for p in _SYSTEM_PREFIXES):
        return False
    # A single file bind-mounted into the container (a config file) is no place to write.
    return not (mount.point.exists() and not mount.point.is_dir())


def _host_warnings(name: HostName, grace: float, persistent: tuple[Path, ...]) -> list[str]:
    warnings: list[str] = []
    if name == "railway" and grace <= 0:
        warnings.append(
            "Railway sends SIGKILL right after SIGTERM (a drain of 0 s), so writes not yet "
            "synced are lost on every deploy: set RAILWAY_DEPLOYMENT_DRAINING_SECONDS=15 "
            "in the service's variables"
        )
    if name == "cloud-run":
        warnings.append(
            "Cloud Run's disk is in memory: every byte written outside a mounted volume "
            "counts against the instance's memory limit, so keep local_max_bytes small"
        )
    if name == "aws-lambda":
        warnings.append(
            f"Lambda can write only to {_tmp_description()}, which is lost when the "
            "execution environment is recycled; it gets well under a second at shutdown "
            "(and SIGTERM only with an extension), so call flush() or put(..., durable=True) "
            "before the handler returns"
        )
    if name not in ("local", "aws-lambda") and not persistent:
        warnings.append(
            f"no persistent volume was found ({name}): the local disk is lost when the "
            "container is replaced (every redeploy), so only what reached the remote survives"
        )
    return warnings


def _tmp_description() -> str:
    tmp = tempfile.gettempdir()
    try:
        size = shutil.disk_usage(tmp).total
    except OSError:
        return f"{tmp} (512 MB unless its ephemeral storage is raised, up to 10 GB)"
    return (
        f"{tmp} ({size // 1024**2} MiB here; raise the function's ephemeral storage, up to 10 GB)"
    )


def _writable_dirs(name: HostName, persistent: tuple[Path, ...]) -> tuple[Path, ...]:
    """Directories the host lets us write, by ``access(2)``: a hint that costs no write.
    :func:`cargohold.paths.probe_dir` is the proof."""
    candidates = [*persistent, Path(tempfile.gettempdir())]
    if name != "aws-lambda":  # only /tmp (and mounted EFS) is writable there
        # Path.home() raises with HOME unset and no passwd entry (arbitrary-uid containers);
        # Path.cwd() when the working directory was deleted.
        with contextlib.suppress(RuntimeError, KeyError):
            candidates.append(Path.home())
        with contextlib.suppress(OSError):
            candidates.append(Path.cwd())
    usable = [p for p in candidates if p.is_dir() and os.access(p, os.W_OK | os.X_OK)]
    return tuple(dict.fromkeys(usable))
