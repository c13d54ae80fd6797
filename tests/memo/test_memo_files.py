"""Results that are files, without traps: a str naming a file is refused, a build writes
into a work directory of cargohold's own (moved into the tier, then removed), and a
returned path stays valid for ``path_grace`` while the local tier evicts its file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cargohold
from cargohold import Hold, InvalidInput, MemoResult
from cargohold.memo import collect_garbage, workdir
from cargohold.remotes import MemoryRemote
from tests.conftest import s3_url
from testsupport.children import dying_with_parent

KiB = 1024
SIZE = 80 * KiB  # over the tier's inline limit: each result is a real file
BOUND = 512 * KiB


@pytest.fixture(params=["memory", "file", "s3"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        name = f"memo-files-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        MemoryRemote.forget(name)
    elif request.param == "file":
        yield (tmp_path / "remote").as_uri()
    else:
        seaweedfs = request.getfixturevalue("seaweedfs")
        yield s3_url(seaweedfs, request.getfixturevalue("seaweedfs_bucket"))


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"memo-files-{uuid.uuid4().hex}"
    with cargohold.open(f"memory://{name}", data_dir=tmp_path / "data", signal_handlers=False) as h:
        yield h
    MemoryRemote.forget(name)


def _open_small(url: str, data_dir: Path) -> Hold:
    """A Hold whose local tier holds about six results: the rest is evicted."""
    return cargohold.open(
        url,
        data_dir=data_dir,
        signal_handlers=False,
        local_max_bytes=BOUND,
        max_pending_bytes=BOUND // 2,
    )


def _take(i: int) -> bytes:
    return f"take {i} ".encode().ljust(SIZE, b".")


def _evict_everything_but_the_newest(hold: Hold, memo: cargohold.Memo, first: int) -> None:
    """Build 20 more results through the small tier, then let the tier drop the files it
    evicted (the syncer does it in the background; done here so the test knows)."""
    for i in range(first, first + 20):
        memo.get_or_create({"i": i}, lambda inputs, work: _write(work, inputs["i"]))
    hold.flush()
    hold.local.collect_garbage()


def _write(work: Path, i: int) -> Path:
    out = work / f"take_{i}.mp4"
    out.write_bytes(_take(i))
    return out


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# -- a str that names a file ------------------------------------------------------------


def test_a_str_naming_a_file_is_refused_and_says_what_to_return(hold: Hold, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF....WAVE")
    folder = tmp_path / "takes"
    folder.mkdir()
    memo = hold.memo("tts")
    for result, where in (
        (str(clip), "as the result"),
        ([str(clip)], r"as the result\[0\]"),  # a Gradio gallery
        (("a transcript", str(clip)), r"as the result\[1\]"),  # two Gradio outputs
        ({"audio": {"path": str(clip)}}, r"as the result\['audio'\]\['path'\]"),
        (str(folder), "as the result"),
    ):
        with pytest.raises(InvalidInput, match=where) as caught:
            memo.get_or_create({"r": repr(result)}, lambda inputs, work, r=result: r)
        message = str(caught.value)
        assert "Return pathlib.Path(" in message
        assert "strings='as-text'" in message
        assert "cargohold.memo.workdir()" in message
    with pytest.raises(InvalidInput, match=r"a Path as the result\[1\].*one folder Path"):
        memo.get_or_create({"r": "path in a tuple"}, lambda inputs, work: ("text", clip))
    assert list(hold.list("memo/")) == []  # nothing stored
    assert list((hold.local.root / "memo-work").iterdir()) == []  # nothing left behind

    # Text that is not the name of a file here is text, even when it looks like a path.
    plain = memo.get_or_create({"r": "plain"}, lambda inputs, work: ["/no/such/file.wav", "."])
    assert memo.get({"r": "plain"}).value == ["/no/such/file.wav", "."]  # type: ignore[union-attr]
    assert plain.kind == "json"


def test_strings_as_text_stores_the_name_as_it_is(hold: Hold, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF....WAVE")

    @hold.memoize(namespace="names", strings="as-text")
    def where_is(name: str) -> str:
        return str(tmp_path / name)

    assert where_is("clip.wav") == str(clip)
    clip.unlink()
    assert where_is("clip.wav") == str(clip)  # a hit: the text, as asked
    assert where_is.memo.strings == "as-text"  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match=r"'no-paths' .* or 'as-text'"):
        hold.memo("names", strings="text")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="path_grace must be a number of seconds"):
        hold.memo("names", path_grace=-1)


def test_a_memoized_gradio_style_function_returning_a_str_path_is_told_the_fix(
    hold: Hold, tmp_path: Path
) -> None:
    """What a Gradio function usually does: write a temp file, return its name as str."""

    @hold.memoize(namespace="speak")
    def speak(text: str) -> str:
        out = tmp_path / f"{text}.wav"
        out.write_bytes(text.encode() * 1000)
        return str(out)

    with pytest.raises(InvalidInput, match=r"Return pathlib\.Path\("):
        speak("hello")
    assert speak.memo.get({"text": "hello"}) is None  # type: ignore[attr-defined]


# -- the build's work directory -----------------------------------------------------------


def test_a_build_writes_into_its_workdir_which_is_moved_in_and_removed(hold: Hold) -> None:
    seen: list[Path] = []
    inodes: list[int] = []

    @hold.memoize(namespace="sora")
    def generate(prompt: str) -> Path:
        folder = workdir()
        seen.append(folder)
        assert list(folder.iterdir()) == []  # empty, and of cargohold's own
        out = folder / "take_1.mp4"
        out.write_bytes(prompt.encode().ljust(SIZE, b"."))
        inodes.append(out.stat().st_ino)
        return out

    path = generate("a cat surfing")
    [folder] = seen
    assert folder.parent == hold.local.root / "memo-work"  # in the data directory
    assert not folder.exists()  # removed once the result was stored
    assert path.read_bytes() == b"a cat surfing".ljust(SIZE, b".")
    assert path.name == "take_1.mp4"
    assert path.stat().st_ino == inodes[0]  # moved into the tier, not copied
    assert generate("a cat surfing") == path  # a hit: the same path
    assert len(seen) == 1
    with pytest.raises(InvalidInput, match=r"only defined while a memo build runs"):
        workdir()


def test_a_build_that_raises_leaves_no_workdir(hold: Hold) -> None:
    seen: list[Path] = []

    def fails(inputs: dict[str, Any], work: Path) -> Path:
        seen.append(work)
        (work / "half.mp4").write_bytes(b"half a video")
        raise RuntimeError("the paid API failed")

    with pytest.raises(RuntimeError, match="paid API"):
        hold.memo("sora").get_or_create({"prompt": "x"}, fails)
    assert not seen[0].exists()
    assert list((hold.local.root / "memo-work").iterdir()) == []
    assert list(hold.list("memo/")) == []


def test_a_path_outside_the_workdir_is_copied_and_left_where_it_was(
    hold: Hold, tmp_path: Path
) -> None:
    outside = tmp_path / "outputs" / "take.mp4"
    outside.parent.mkdir()
    outside.write_bytes(_take(1))
    entry = hold.memo("sora").get_or_create({"p": 1}, lambda inputs, work: outside)
    assert outside.read_bytes() == _take(1)  # the app's own file: untouched
    assert entry.path is not None
    assert entry.path.read_bytes() == _take(1)
    assert not entry.path.samefile(outside)


def test_a_folder_result_from_the_workdir_and_symlinks_out_of_it(
    hold: Hold, tmp_path: Path
) -> None:
    """Files of a folder result move in; a symlink in it to the app's own file is copied
    (its target stays the app's, unchanged and unlinked)."""
    own = tmp_path / "own.bin"
    own.write_bytes(_take(9))

    def build(inputs: dict[str, Any], work: Path) -> Path:
        (work / "takes").mkdir()
        for i in range(2):
            (work / "takes" / f"take_{i}.mp4").write_bytes(_take(i))
        (work / "takes" / "linked.bin").symlink_to(own)
        return work / "takes"

    entry = hold.memo("dirs").get_or_create({"p": 1}, build)
    assert entry.path is not None
    assert [p.name for p in _files_under(entry.path)] == ["linked.bin", "take_0.mp4", "take_1.mp4"]
    assert (entry.path / "take_1.mp4").read_bytes() == _take(1)
    assert (entry.path / "linked.bin").read_bytes() == _take(9)
    assert own.stat().st_nlink == 1  # not given to the tier
    assert own.read_bytes() == _take(9)


def test_a_killed_builds_workdir_is_swept_but_a_running_one_is_not(hold: Hold) -> None:
    root = hold.local.root / "memo-work"
    root.mkdir(exist_ok=True)
    leftover = root / "sora-killed"  # as a process killed mid-build leaves it
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "half.mp4").write_bytes(b"half")
    os.utime(leftover, (0, 0))
    during: list[bool] = []

    def build(inputs: dict[str, Any], work: Path) -> bytes:
        os.utime(work, (0, 0))  # as old as the leftover: only the lock tells them apart
        collect_garbage(hold)  # sweeps memo-work/ while this build runs
        during.extend([work.exists(), leftover.exists()])
        return b"done"

    assert hold.memo("sora").get_or_create({"p": 1}, build).value == b"done"
    assert during == [True, False]


# -- how long a returned path stays valid ---------------------------------------------------


def test_a_returned_path_stays_valid_while_the_tier_evicts_its_file(
    remote_url: str, tmp_path: Path
) -> None:
    """The rule a Gradio app relies on: for path_grace (600 s) after the call, the path
    names the complete file, however much the tier evicts and the sweeps run."""
    with _open_small(remote_url, tmp_path / "data") as hold:
        memo = hold.memo("takes")
        first = memo.get_or_create({"i": 0}, lambda inputs, work: _write(work, 0))
        assert first.path is not None
        _evict_everything_but_the_newest(hold, memo, 1)
        # Hits from another thread while more builds evict and sweep.
        errors: list[BaseException] = []

        def read_back() -> None:
            try:
                for i in range(1, 21):
                    entry = memo.get({"i": i})
                    assert entry is not None
                    assert entry.path is not None
                    assert entry.path.read_bytes() == _take(i)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        reader = threading.Thread(target=read_back)
        reader.start()
        _evict_everything_but_the_newest(hold, memo, 21)
        reader.join()
        assert errors == []
        assert collect_garbage(hold) == 0  # sweeps memo-files/ too
        assert first.path.stat().st_nlink == 1  # the tier evicted it: only the path keeps it
        assert first.path.read_bytes() == _take(0)
        # A hit brings the file back into the tier, at the same path (a new Memo: none
        # of the first one's entries found within the last second, kept in memory).
        again = hold.memo("takes").get({"i": 0})
        assert again is not None
        assert again.path == first.path
        assert again.path.stat().st_nlink > 1
        assert again.path.read_bytes() == _take(0)


def test_after_the_grace_a_hit_gives_the_same_path_valid_again(
    remote_url: str, tmp_path: Path
) -> None:
    with _open_small(remote_url, tmp_path / "data") as hold:
        memo = hold.memo("takes", path_grace=0)  # the grace is over at once
        first = memo.get_or_create({"i": 0}, lambda inputs, work: _write(work, 0))
        assert first.path is not None
        _evict_everything_but_the_newest(hold, memo, 1)
        collect_garbage(hold)
        assert not first.path.exists()  # evicted, out of its grace, swept
        again = memo.get({"i": 0})
        assert again is not None
        assert again.path == first.path
        assert again.path.read_bytes() == _take(0)  # read back from the remote


def test_a_longer_earlier_grace_is_kept_by_a_later_call_with_none(tmp_path: Path) -> None:
    """Two memos of one namespace: the promise of the first call stands."""
    name = f"memo-files-{uuid.uuid4().hex}"
    with _open_small(f"memory://{name}", tmp_path / "data") as hold:
        kept = hold.memo("takes")
        first = kept.get_or_create({"i": 0}, lambda inputs, work: _write(work, 0))
        assert hold.memo("takes", path_grace=0).get({"i": 0}) is not None
        _evict_everything_but_the_newest(hold, hold.memo("takes", path_grace=0), 1)
        collect_garbage(hold)
        assert first.path is not None
        assert first.path.read_bytes() == _take(0)
    MemoryRemote.forget(name)


# -- a restart on an empty disk ---------------------------------------------------------------


def test_a_restart_on_an_empty_data_directory_gives_real_files(
    remote_url: str, tmp_path: Path
) -> None:
    calls: list[str] = []

    def make(data_dir: Path) -> tuple[Hold, Any, Any]:
        hold = _open_small(remote_url, data_dir)

        @hold.memoize(namespace="sora", version="v2")
        def generate(prompt: str) -> Path:
            calls.append(prompt)
            return _write(workdir(), len(calls))

        @hold.memoize(namespace="takes", version="v2")
        def takes(prompt: str) -> MemoResult:
            calls.append(prompt)
            folder = workdir() / "takes"
            (folder / "sub").mkdir(parents=True)
            (folder / "a.mp4").write_bytes(_take(7))
            (folder / "sub" / "b.json").write_text('{"seed": 7}')
            return MemoResult(folder, fields={"seed": 7})

        return hold, generate, takes

    hold, generate, takes = make(tmp_path / "first")
    with hold:
        built = generate("a cat")
        folder = takes("three takes")
    assert isinstance(built, Path)
    assert isinstance(folder, Path)
    hold, generate, takes = make(tmp_path / "redeployed")  # an empty disk
    with hold:
        hit = generate("a cat")
        assert isinstance(hit, Path)
        assert hit.read_bytes() == _take(1)
        assert hit.name == "take_1.mp4"
        assert hit.is_relative_to(tmp_path / "redeployed")
        folder = takes("three takes")
        assert (folder / "a.mp4").read_bytes() == _take(7)
        assert (folder / "sub" / "b.json").read_text() == '{"seed": 7}'
    assert calls == ["a cat", "three takes"]  # no build after the restart


# -- other processes sharing the data directory ---------------------------------------------

EVICTOR = textwrap.dedent(
    """
    import sys
    import cargohold
    from cargohold.memo import collect_garbage
    url, data_dir, size, bound = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def build(inputs, workdir):
        out = workdir / f"take_{inputs['i']}.mp4"
        out.write_bytes(f"take {inputs['i']} ".encode().ljust(size, b"."))
        return out

    with cargohold.open(url, data_dir=data_dir, signal_handlers=False,
                        local_max_bytes=bound, max_pending_bytes=bound // 2) as hold:
        memo = hold.memo("takes", path_grace=0)  # its own paths: no grace at all
        for i in range(1, 21):
            memo.get_or_create({"i": i}, build)
        hold.flush()
        hold.local.collect_garbage()
        collect_garbage(hold)
    """
)

KILLED_BUILD = textwrap.dedent(
    """
    import sys, time
    import cargohold
    url, data_dir = sys.argv[1], sys.argv[2]
    hold = cargohold.open(url, data_dir=data_dir, signal_handlers=False)

    def build(inputs, workdir):
        (workdir / "half.mp4").write_bytes(b"half a video")
        print(workdir, flush=True)
        time.sleep(600)  # killed here

    hold.memo("sora").get_or_create({"p": 1}, build)
    """
)


def test_another_process_keeps_the_promise_of_a_path_handed_out_here(tmp_path: Path) -> None:
    """The grace lives on disk: another worker process (gunicorn's, say) evicting and
    sweeping with no grace of its own leaves a path this process handed out whole."""
    url = (tmp_path / "remote").as_uri()
    data_dir = tmp_path / "data"
    # Closed before the other process runs: one syncer per data directory, and this
    # one's would send the other's writes only at its next poll.
    with _open_small(url, data_dir) as hold:
        first = hold.memo("takes").get_or_create({"i": 0}, lambda inputs, work: _write(work, 0))
    assert first.path is not None
    evictor = [sys.executable, "-c", EVICTOR, url, str(data_dir), str(SIZE), str(BOUND)]
    subprocess.run(dying_with_parent(evictor), check=True, timeout=120)
    assert first.path.stat().st_nlink == 1  # evicted by the other process, then kept
    assert first.path.read_bytes() == _take(0)


def test_a_build_killed_mid_way_leaves_a_workdir_the_next_sweep_removes(tmp_path: Path) -> None:
    url = (tmp_path / "remote").as_uri()
    data_dir = tmp_path / "data"
    child = subprocess.Popen(
        dying_with_parent([sys.executable, "-c", KILLED_BUILD, url, str(data_dir)]),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    leftover = Path(child.stdout.readline().strip())
    child.kill()
    child.wait(timeout=30)
    child.stdout.close()
    assert (leftover / "half.mp4").exists()  # SIGKILL: no finally ran
    os.utime(leftover, (0, 0))  # older than a build that has just begun
    with cargohold.open(url, data_dir=data_dir, signal_handlers=False) as hold:
        collect_garbage(hold)
        assert not leftover.exists()
        assert list((hold.local.root / "memo-work").iterdir()) == []
