"""fsspec's own abstract test suites (copy, get, put, open, pipe) against hold://, on the
memory, file and S3 remotes: the filesystem behaves as fsspec's users expect of any other."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fsspec.tests.abstract import (
    AbstractCopyTests,
    AbstractFixtures,
    AbstractGetTests,
    AbstractOpenTests,
    AbstractPipeTests,
    AbstractPutTests,
)

from cargohold import Hold
from cargohold.fs import HoldFileSystem


class HoldFixtures(AbstractFixtures):  # type: ignore[misc] # fsspec is untyped
    """The fixtures fsspec's suites ask a filesystem to provide."""

    @pytest.fixture
    def fs(self, hold: Hold) -> Iterator[HoldFileSystem]:
        # skip_instance_cache: a filesystem of its own for each test's Hold.
        yield HoldFileSystem(instance=hold, skip_instance_cache=True)
        # Passing means the remote took every write too (flush raises the error of one it
        # refused, as the file remote would a key that is also a folder).
        hold.flush(60)
        assert hold.status().pending_count == 0

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return lambda *parts: "/".join(parts)

    @pytest.fixture
    def fs_path(self) -> str:
        return "base"

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False  # folders are implied by keys, as in an object store


class TestHoldCopy(HoldFixtures, AbstractCopyTests):  # type: ignore[misc]
    pass


class TestHoldGet(HoldFixtures, AbstractGetTests):  # type: ignore[misc]
    pass


class TestHoldPut(HoldFixtures, AbstractPutTests):  # type: ignore[misc]
    pass


class TestHoldOpen(HoldFixtures, AbstractOpenTests):  # type: ignore[misc]
    pass


class TestHoldPipe(HoldFixtures, AbstractPipeTests):  # type: ignore[misc]
    pass
