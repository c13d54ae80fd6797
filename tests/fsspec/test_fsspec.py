"""The hold:// fsspec protocol, used by pandas and pyarrow."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pytest

import cargohold
from cargohold import Hold
from cargohold.fs import HoldFileSystem
from cargohold.remotes import MemoryRemote


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"fsspec-{uuid.uuid4().hex}"
    with cargohold.open(f"memory://{name}", data_dir=tmp_path, signal_handlers=False) as opened:
        yield opened
    MemoryRemote.forget(name)


def test_pandas_round_trips_parquet_through_the_hold(hold: Hold) -> None:
    frame = pd.DataFrame({"prompt": ["a cat", "a dog"], "seconds": [5, 8]})
    frame.to_parquet("hold://tables/t.parquet", storage_options={"instance": hold})
    assert hold.head("tables/t.parquet").size > 0
    back = pd.read_parquet("hold://tables/t.parquet", storage_options={"instance": hold})
    pd.testing.assert_frame_equal(back, frame)
    hold.flush(30)
    assert hold.remote.head("tables/t.parquet").size == hold.head("tables/t.parquet").size


def test_fsspec_open_read_write_list(hold: Hold) -> None:
    hold.put("videos/a.mp4", b"\x00" * 1000)
    with fsspec.open("hold://videos/a.mp4", "rb", instance=hold) as f:
        assert f.read(4) == b"\x00" * 4
    with fsspec.open("hold://notes/n.txt", "wt", instance=hold) as f:
        f.write("hello")
    assert hold.get("notes/n.txt") == b"hello"
    fs = fsspec.filesystem("hold", instance=hold)
    assert isinstance(fs, HoldFileSystem)
    assert fs.ls("", detail=False) == ["notes", "videos"]
    assert fs.ls("videos", detail=False) == ["videos/a.mp4"]
    assert fs.info("videos")["type"] == "directory"
    assert fs.info("videos/a.mp4")["size"] == 1000
    assert fs.cat_file("videos/a.mp4", start=10, end=12) == b"\x00\x00"
    fs.rm("notes/n.txt")
    assert not fs.exists("notes/n.txt")
    with pytest.raises(FileNotFoundError):
        fs.info("nothing/here")
    with pytest.raises(ValueError):  # the key rules still apply (InvalidKey is a ValueError)
        fs.cat_file("../escape")
