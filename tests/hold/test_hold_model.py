"""A stateful property test: random puts, gets, deletes, lists, flushes and restarts of a
Hold, checked against a plain dict, on the file remote and on S3 (SeaweedFS)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import cargohold
from cargohold import Hold, NotFoundError
from tests.conftest import s3_url
from testsupport.servers import SeaweedFS

KEYS = st.sampled_from(["a", "b/c", "b/d", "e/f/g", "é/ü", "big/video.mp4"])
# (size, fill byte): sizes on both sides of the inline limit, with short reprs in reports.
VALUES = st.tuples(st.sampled_from([0, 1, 64, 70_000, 150_000]), st.integers(0, 255))


def _bytes(value: tuple[int, int]) -> bytes:
    size, fill = value
    return bytes([fill]) * size


def _summary(objects: dict[str, bytes]) -> dict[str, tuple[int, bytes]]:
    return {key: (len(value), value[:1]) for key, value in objects.items()}


class HoldModel(RuleBasedStateMachine):
    """The Hold must behave like a dict; after a flush, so must the remote."""

    remote_url: str = ""

    @initialize()
    def open_hold(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="cargohold-model-"))
        self.prefix_url = self.remote_url.replace("{prefix}", f"m-{uuid.uuid4().hex[:10]}")
        self.model: dict[str, bytes] = {}
        self.hold = self._open()

    def _open(self) -> Hold:
        return cargohold.open(self.prefix_url, data_dir=self.data_dir, signal_handlers=False)

    @rule(key=KEYS, value=VALUES)
    def put(self, key: str, value: tuple[int, int]) -> None:
        self.hold.put(key, _bytes(value))
        self.model[key] = _bytes(value)

    @rule(key=KEYS, value=VALUES)
    def put_durable(self, key: str, value: tuple[int, int]) -> None:
        self.hold.put(key, _bytes(value), durable=True)
        self.model[key] = _bytes(value)
        assert self.hold.remote.get(key) == _bytes(value)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        if key in self.model:
            assert self.hold.get(key) == self.model[key]
        else:
            with pytest.raises(NotFoundError):
                self.hold.get(key)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        self.hold.delete(key)
        self.model.pop(key, None)

    @rule()
    def flush(self) -> None:
        self.hold.flush(timeout=60)
        remote = {info.key: self.hold.remote.get(info.key) for info in self.hold.remote.list()}
        assert _summary(remote) == _summary(self.model)

    @rule()
    def restart(self) -> None:
        """Close without waiting and open the same data directory again."""
        self.hold.close(timeout=0)
        self.hold = self._open()

    @precondition(lambda self: bool(self.model))
    @rule()
    def restart_on_an_empty_disk(self) -> None:
        """Lose the local disk after a flush: everything comes back from the remote."""
        self.hold.flush(timeout=60)
        self.hold.close()
        shutil.rmtree(self.data_dir)
        self.hold = self._open()

    @invariant()
    def listing_matches(self) -> None:
        if hasattr(self, "hold"):
            assert {info.key for info in self.hold.list()} == set(self.model)

    def teardown(self) -> None:
        if hasattr(self, "hold"):
            self.hold.close(timeout=0)
            shutil.rmtree(self.data_dir, ignore_errors=True)


RUN = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_hold_behaves_like_a_dict_on_the_file_remote(tmp_path: Path) -> None:
    class OnFile(HoldModel):
        remote_url = "file://" + str(tmp_path / "remote" / "{prefix}")

    run_state_machine_as_test(OnFile, settings=RUN)


def test_hold_behaves_like_a_dict_on_s3(seaweedfs: SeaweedFS, seaweedfs_bucket: str) -> None:
    class OnS3(HoldModel):
        remote_url = s3_url(seaweedfs, seaweedfs_bucket, prefix="{prefix}")

    run_state_machine_as_test(OnS3, settings=RUN)
