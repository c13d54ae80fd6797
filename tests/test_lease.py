"""The lease heartbeat (cargohold._heartbeat), shared by the remote's lock object
(cargohold._lease.Lease, here on a file remote and on SeaweedFS) and the catalog's row
(cargohold.catalog.PgLease, tests/catalog/test_catalog_leases.py): a release that comes
while a renewal is in flight waits for it, gives the lease up once, and no renewal
follows it; two releases at once give it up once."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from cargohold._lease import Lease
from cargohold.errors import NotFoundError
from cargohold.keys import internal_key
from cargohold.remotes import Remote, open_remote
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS

TTL = 0.3  # a renewal every 0.1 s: the first comes soon


class AnyLease(Protocol):
    lost: bool

    def try_acquire(self) -> bool: ...
    def release(self) -> None: ...


def release_during_renewal(
    lease: AnyLease,
    hook: Callable[[Callable[..., Any]], None],
    give_up_hook: Callable[[Callable[..., Any]], None],
) -> list[str]:
    """Hold ``lease``'s first renewal in flight while another thread releases it, and
    return what happened, in order. ``hook(wrap)`` puts ``wrap`` around the call that
    renews, ``give_up_hook(wrap)`` around the one that gives the lease up."""
    events: list[str] = []
    renewing, released = threading.Event(), threading.Event()

    def renew_wrapper(real: Callable[..., Any]) -> Callable[..., Any]:
        def renew(*args: Any, **kwargs: Any) -> Any:
            if not renewing.is_set():
                renewing.set()
                # Give the release every chance to run now. It must not: it waits for
                # this renewal. (If it could, this wait would see it done.)
                events.append("released during the renewal" if released.wait(5) else "waited")
            events.append("renew")
            return real(*args, **kwargs)

        return renew

    def give_up_wrapper(real: Callable[..., Any]) -> Callable[..., Any]:
        def give_up(*args: Any, **kwargs: Any) -> Any:
            events.append("give up")
            return real(*args, **kwargs)

        return give_up

    hook(renew_wrapper)
    give_up_hook(give_up_wrapper)
    assert lease.try_acquire()
    assert renewing.wait(60), "the heartbeat never renewed"

    def release() -> None:
        lease.release()
        released.set()

    releasers = [threading.Thread(target=release) for _ in range(2)]  # the user and a stop hook
    for t in releasers:
        t.start()
    for t in releasers:
        t.join(60)
    heart = lease._heartbeat._thread  # type: ignore[attr-defined]
    assert heart is not None
    heart.join(60)
    assert not heart.is_alive()
    assert not lease.lost
    return events


@pytest.fixture(params=["file", "s3"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    if request.param == "file":
        opened = open_remote((tmp_path / "remote").as_uri())
    else:
        seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
        bucket: str = request.getfixturevalue("seaweedfs_bucket")
        opened = open_remote(s3_url(seaweedfs, bucket))
    yield opened
    opened.close()


def test_a_release_during_a_renewal_waits_for_it_and_gives_up_once(
    remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = internal_key(f"leases/test/{uuid.uuid4().hex}")
    lease = Lease(remote, key, ttl=TTL, purpose="a test")
    real_put, real_delete = remote.put, remote.delete
    events = release_during_renewal(
        lease,
        lambda wrap: monkeypatch.setattr(remote, "put", _after_first(real_put, wrap)),
        lambda wrap: monkeypatch.setattr(remote, "delete", wrap(real_delete)),
    )
    assert events == ["waited", "renew", "give up"], events
    with pytest.raises(NotFoundError):
        remote.head(key)


def _after_first(real: Callable[..., Any], wrap: Callable[..., Any]) -> Callable[..., Any]:
    """``real`` for the first call (the acquiring put), then ``wrap(real)`` (renewals)."""
    wrapped = wrap(real)
    calls = [0]

    def put(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs) if calls[0] == 1 else wrapped(*args, **kwargs)

    return put


def test_a_lease_whose_object_is_gone_is_lost_and_not_renewed_again(
    remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    """Taken over and released by another (the object gone): the holder hears it lost at
    its next renewal, stops renewing, and its release deletes nothing."""
    key = internal_key(f"leases/test/{uuid.uuid4().hex}")
    lease = Lease(remote, key, ttl=TTL, purpose="a test")
    assert lease.try_acquire()
    remote.delete(key)
    heart = lease._heartbeat._thread
    assert heart is not None
    heart.join(60)
    assert not heart.is_alive()
    assert lease.lost
    assert "lost the lease on a test" in caplog.text
    other = Lease(remote, key, ttl=TTL, purpose="another")
    assert other.try_acquire()
    lease.release()
    assert remote.head(key).etag == other.etag, "the lost lease's release left the new one"
    other.release()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_child_forked_during_a_renewal_neither_hangs_nor_gives_the_parents_lease_up(
    tmp_path: Path,
) -> None:
    """fork() while the heartbeat's renewal holds its lock (forced here by holding that
    lock across the fork: no thread schedule can be asked for): the child inherits a held
    lock and no thread to let it go. Its release must return at once and leave the lease,
    which is the parent's, where it is; the parent's heartbeat goes on."""
    from tests.hold.test_fork import _in_child

    remote = open_remote((tmp_path / "remote").as_uri())
    key = internal_key(f"leases/test/{uuid.uuid4().hex}")
    lease = Lease(remote, key, ttl=30, purpose="a test")
    assert lease.try_acquire()
    heartbeat = lease._heartbeat
    with heartbeat._turn:
        code = _in_child(lease.release)
    assert code == 0, "the child's release failed or hung"
    assert remote.head(key).size > 0, "the child gave the parent's lease up"
    assert not lease.lost
    lease.release()
    with pytest.raises(NotFoundError):
        remote.head(key)
    remote.close()


def test_leases_that_are_done_leave_nothing_registered_for_fork(tmp_path: Path) -> None:
    """Each lease's heartbeat registers a reset for fork(); a long-lived server that
    builds thousands of entries and never forks must not keep one per lease it made."""
    import gc

    from cargohold import _fork

    remote = open_remote((tmp_path / "remote").as_uri())
    gc.collect()
    before = len(_fork._callbacks)
    for i in range(200):
        lease = Lease(remote, internal_key(f"leases/test/{i}"), ttl=30, purpose="a test")
        assert lease.try_acquire()
        lease.release()
    del lease
    gc.collect()
    assert len(_fork._callbacks) <= before + 1
    remote.close()
