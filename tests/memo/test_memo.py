"""The generation cache in one process: results, records, keys, bounds, seeds."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cargohold
from cargohold import Hold, InvalidInput, MemoResult
from cargohold._canonical import canonical, entry_digest
from cargohold.memo import collect_garbage
from cargohold.remotes import FileRemote, MemoryRemote


@pytest.fixture
def hold(tmp_path: Path) -> Iterator[Hold]:
    name = f"memo-{uuid.uuid4().hex}"
    with cargohold.open(f"memory://{name}", data_dir=tmp_path / "data", signal_handlers=False) as h:
        yield h
    MemoryRemote.forget(name)


class Counter:
    """A build that counts its calls."""

    def __init__(self, result: Any = b"rendered") -> None:
        self.calls = 0
        self.result = result
        self.lock = threading.Lock()

    def __call__(self, inputs: dict[str, Any], workdir: Path) -> Any:
        with self.lock:
            self.calls += 1
        return self.result(inputs, workdir) if callable(self.result) else self.result


def test_a_hit_does_not_call_the_build(hold: Hold) -> None:
    memo = hold.memo("tts", version="v1")
    build = Counter(b"audio bytes")
    first = memo.get_or_create({"text": "hello", "voice": "ana"}, build)
    again = memo.get_or_create({"voice": "ana", "text": "hello"}, build)  # key order is irrelevant
    assert build.calls == 1
    assert (first.hit, again.hit) == (False, True)
    assert first.value == again.value == b"audio bytes"
    assert memo.get_or_create({"text": "other", "voice": "ana"}, build).hit is False
    assert build.calls == 2


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        (b"\x00bytes", "bytes"),
        ("a transcript", "str"),
        ("x" * 100_000, "str"),  # long text goes to a file, comes back as text
        ({"labels": ["cat", "dog"], "score": 0.93}, "json"),
        ([1, 2, 3], "json"),
        (42, "json"),
    ],
)
def test_value_results_round_trip(hold: Hold, result: Any, kind: str) -> None:
    memo = hold.memo("values")
    built = memo.get_or_create({"r": repr(result)[:50], "k": kind}, Counter(result))
    hit = memo.get_or_create({"r": repr(result)[:50], "k": kind}, Counter())
    assert built.kind == hit.kind == kind
    assert hit.value == result
    assert hit.result == result


def test_file_and_folder_results(hold: Hold) -> None:
    memo = hold.memo("sora", version="v2")

    def video(inputs: dict[str, Any], workdir: Path) -> Path:
        out = workdir / "take_1.mp4"
        out.write_bytes(b"\x00\x00\x00\x18ftypmp42" + inputs["prompt"].encode() * 1000)
        return out

    def takes(inputs: dict[str, Any], workdir: Path) -> Path:
        (workdir / "takes" / "sub").mkdir(parents=True)
        for i in range(3):
            (workdir / "takes" / f"take_{i}.mp4").write_bytes(bytes([i]) * 70_000)
        (workdir / "takes" / "sub" / "meta.json").write_text("{}")
        return workdir / "takes"

    entry = memo.get_or_create({"prompt": "a cat"}, video)
    assert entry.kind == "file"
    assert entry.path is not None
    assert entry.path.name == "take_1.mp4"
    assert entry.path.read_bytes().startswith(b"\x00\x00\x00\x18ftyp")
    assert entry.files[0].content_type == "video/mp4"
    folder = memo.get_or_create({"prompt": "three takes"}, takes)
    assert folder.kind == "dir"
    assert folder.path is not None
    assert sorted(
        p.relative_to(folder.path).as_posix() for p in folder.path.rglob("*") if p.is_file()
    ) == [
        "sub/meta.json",
        "take_0.mp4",
        "take_1.mp4",
        "take_2.mp4",
    ]
    assert (
        memo.get({"prompt": "three takes"}).path.joinpath("take_2.mp4").read_bytes()
        == bytes([2]) * 70_000
    )  # type: ignore[union-attr]


def test_the_record_describes_the_entry(hold: Hold) -> None:
    memo = hold.memo("sora", version="v2")

    def build(inputs: dict[str, Any], workdir: Path) -> MemoResult:
        (workdir / "out.mp4").write_bytes(b"movie")
        return MemoResult(workdir / "out.mp4", fields={"seed": 7, "model": "sora-2"})

    entry = memo.get_or_create({"prompt": "a cat", "seconds": 5}, build)
    record = json.loads(hold.get(f"memo/sora/v2/{entry.digest[:2]}/{entry.digest}.json"))
    assert record["inputs"] == {"prompt": "a cat", "seconds": 5}
    assert record["fields"] == {"seed": 7, "model": "sora-2"}
    assert record["kind"] == "file"
    assert record["files"] == [
        {
            "name": "out.mp4",
            "sha256": hashlib.sha256(b"movie").hexdigest(),
            "size": 5,
            "content_type": "video/mp4",
        }
    ]
    assert record["build_seconds"] >= 0
    assert record["created"] <= time.time()


def test_same_bytes_are_stored_once(hold: Hold) -> None:
    memo = hold.memo("dedupe")
    for prompt in ("a", "b", "c"):
        memo.get_or_create({"prompt": prompt}, Counter(b"identical output" * 1000))
    blobs = [info.key for info in hold.list("memo/blobs/")]
    assert blobs == [
        f"memo/blobs/{hashlib.sha256(b'identical output' * 1000).hexdigest()[:2]}/"
        f"{hashlib.sha256(b'identical output' * 1000).hexdigest()}"
    ]


def test_a_failed_build_is_not_cached_and_leaves_nothing(hold: Hold) -> None:
    memo = hold.memo("flaky")

    def fails(inputs: dict[str, Any], workdir: Path) -> bytes:
        (workdir / "partial.mp4").write_bytes(b"half a video")
        raise RuntimeError("the model API timed out")

    with pytest.raises(RuntimeError, match="timed out"):
        memo.get_or_create({"prompt": "x"}, fails)
    assert memo.get({"prompt": "x"}) is None
    assert list(hold.list("memo/")) == []
    assert memo.get_or_create({"prompt": "x"}, Counter(b"ok")).value == b"ok"


def test_bad_inputs_and_results_say_what_to_fix(hold: Hold) -> None:
    memo = hold.memo("strict")
    for inputs, fix in (
        ({"data": b"raw"}, "digest of the bytes"),
        ({"tags": {"a", "b"}}, "sorted list"),
        ({"x": float("nan")}, "NaN"),
        ({"p": Path("/tmp")}, "PosixPath"),
        ({1: "int key"}, "str keys"),
        (["not", "a", "mapping"], "mapping"),
    ):
        with pytest.raises(InvalidInput, match=fix):
            memo.get_or_create(inputs, Counter())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="return bytes, str"):
        memo.get_or_create({"a": 1}, Counter(object()))
    with pytest.raises(InvalidInput, match="does not exist"):
        memo.get_or_create({"a": 2}, Counter(Path("/nonexistent/file.mp4")))
    with pytest.raises(InvalidInput, match="namespace"):
        hold.memo("bad/namespace")
    with pytest.raises(InvalidInput, match="reserved"):  # memo/blobs/ holds the result files
        hold.memo("blobs")
    assert list(hold.list("memo/")) == []


def test_digests_are_stable() -> None:
    # A fixed value: if this changes, every cache entry ever written is lost.
    assert (
        canonical({"b": [1, 2.5, None, True], "a": "é"})
        == '{"a":"é","b":[1,2.5,null,true]}'.encode()
    )
    assert (
        entry_digest("sora", "v2", {"prompt": "a cat", "seconds": 5})
        == hashlib.sha256(b'["sora","v2"]\n{"prompt":"a cat","seconds":5}').hexdigest()
    )
    assert entry_digest("sora", "v2", {"x": (1, 2)}) == entry_digest("sora", "v2", {"x": [1, 2]})


def test_a_version_bump_misses_and_prune_removes_old_versions(hold: Hold) -> None:
    v1 = hold.memo("model", version="v1")
    v1.get_or_create({"q": 1}, Counter(b"old model"))
    build = Counter(b"new model")
    v2 = hold.memo("model", version="v2")
    assert v2.get_or_create({"q": 1}, build).value == b"new model"
    assert build.calls == 1
    assert v2.prune_versions() == 1
    assert v1.get({"q": 1}) is None
    assert v2.get({"q": 1}) is not None


def test_entries_are_listed_newest_first_and_filtered(hold: Hold) -> None:
    memo = hold.memo("gallery")
    for i, prompt in enumerate(["cat", "dog", "cat", "bird"]):
        memo.get_or_create({"prompt": prompt, "n": i}, Counter(f"{prompt}{i}".encode()))
    listed = memo.entries()
    assert [e.inputs["n"] for e in listed] == [3, 2, 1, 0]
    assert [e.inputs["n"] for e in memo.entries(where={"prompt": "cat"})] == [2, 0]
    page = memo.entries(limit=2)
    assert [e.inputs["n"] for e in memo.entries(limit=2, before=page[-1].created)] == [1, 0]
    stats = memo.stats()
    assert (stats.count, stats.bytes) == (
        4,
        sum(len(f"{p}{i}") for i, p in enumerate(["cat", "dog", "cat", "bird"])),
    )


def test_delete_ttl_and_byte_bound(hold: Hold) -> None:
    memo = hold.memo("bounded", max_bytes=2500)
    for i in range(5):
        memo.get_or_create({"i": i}, Counter(bytes([i]) * 1000))
    assert [e.inputs["i"] for e in memo.entries()] == [4, 3], "oldest go first past max_bytes"
    assert memo.delete({"i": 4}) is True
    assert memo.delete({"i": 4}) is False
    assert memo.get({"i": 4}) is None
    short = hold.memo("short-lived", ttl=0.0)
    build = Counter(b"x")
    short.get_or_create({"q": 1}, build)
    short.get_or_create({"q": 1}, build)
    assert build.calls == 2, "an entry past its ttl is a miss"


def test_memoize_binds_arguments_with_their_defaults(hold: Hold) -> None:
    calls: list[tuple[str, int]] = []

    @hold.memoize(namespace="sora", version="v2")
    def generate(prompt: str, seconds: int = 5) -> bytes:
        calls.append((prompt, seconds))
        return f"{prompt}:{seconds}".encode()

    assert generate("a cat") == b"a cat:5"
    assert generate("a cat", 5) == b"a cat:5"
    assert generate(prompt="a cat", seconds=5) == b"a cat:5"
    assert generate("a cat", seconds=6) == b"a cat:6"
    assert calls == [("a cat", 5), ("a cat", 6)]
    assert generate.memo.get({"prompt": "a cat", "seconds": 5}).hit  # type: ignore[attr-defined]


def test_memoize_leaves_ignored_and_progress_parameters_out_of_the_inputs(hold: Hold) -> None:
    """joblib's ``ignore=``, and a progress parameter told how the call goes as
    ``arg(fraction, desc=message)``: neither is part of what identifies a result."""
    told: list[tuple[float | None, str]] = []

    def report(fraction: float | None, desc: str = "") -> None:
        told.append((fraction, desc))

    @hold.memoize(namespace="gen", ignore=["verbose"], progress="report")
    def generate(prompt: str, verbose: bool = False, report: Any = None) -> bytes:
        return prompt.encode()

    assert generate("a cat", True, report) == b"a cat"
    assert [f for f, _ in told] == [None, 1.0]  # building, then done
    assert all(desc for _, desc in told)
    told.clear()
    assert generate("a cat", verbose=False, report=report) == b"a cat"  # a hit
    assert told == []  # a hit found at once reports nothing
    assert generate.memo.get({"prompt": "a cat"}).hit  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput, match="'nope'"):
        hold.memoize(namespace="gen", ignore=["nope"])(lambda prompt: b"")

    @hold.memoize(namespace="gen2", ignore="verbose")  # one name, not its letters
    def quiet(prompt: str, verbose: bool = False) -> bytes:
        return prompt.encode()

    assert quiet("a", True) == quiet("a", False) == b"a"
    assert quiet.memo.stats().count == 1  # type: ignore[attr-defined]


def test_memoize_takes_a_gradio_progress_default_as_the_progress_parameter(hold: Hold) -> None:
    """Gradio injects ``progress=gr.Progress()`` into the functions it calls; such a
    function used to be refused (a Progress has no canonical form)."""
    gr = pytest.importorskip("gradio")
    calls: list[str] = []

    @hold.memoize(namespace="gradio-gen")
    def generate(prompt: str, progress: Any = gr.Progress()) -> bytes:  # noqa: B008
        calls.append(prompt)
        return prompt.encode()

    assert generate("a dog") == b"a dog"  # outside an event, gr.Progress() does nothing
    assert generate("a dog", progress=gr.Progress()) == b"a dog"
    assert calls == ["a dog"]


def test_memoize_a_function_that_returns_a_file(hold: Hold, tmp_path: Path) -> None:
    """The issue's headline: ``@hold.memoize`` on a generator that returns a Path."""
    calls: list[str] = []

    @hold.memoize(namespace="sora", version="v2")
    def generate(prompt: str, seconds: int = 5) -> Path:
        calls.append(prompt)
        out = tmp_path / f"take-{len(calls)}.mp4"
        out.write_bytes(f"{prompt} for {seconds}s".encode() * 1000)
        return out

    first = generate("a cat")
    assert isinstance(first, Path)
    assert first.read_bytes() == b"a cat for 5s" * 1000
    (tmp_path / "take-1.mp4").unlink()  # the generator's own file is gone: the hold kept one
    again = generate("a cat", seconds=5)
    assert isinstance(again, Path)
    assert again.read_bytes() == b"a cat for 5s" * 1000
    assert again.name == "take-1.mp4"  # the file keeps its name
    assert calls == ["a cat"]


def test_threads_asking_at_once_build_once(hold: Hold) -> None:
    memo = hold.memo("race")
    started = threading.Barrier(10)

    def slow(inputs: dict[str, Any], workdir: Path) -> bytes:
        time.sleep(0.3)  # long enough that the other threads arrive while it builds
        return b"built once"

    build = Counter(slow)
    results: list[bytes] = []

    def ask() -> None:
        started.wait()
        results.append(memo.get_or_create({"prompt": "same"}, build).value)

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert build.calls == 1
    assert results == [b"built once"] * 10


def test_seed_layer_export_and_reimport(tmp_path: Path) -> None:
    remote = FileRemote(tmp_path / "remote")
    seed = tmp_path / "repo" / "data" / "seed"
    with Hold(
        remote=remote,
        local_dir=tmp_path / "a",
        settings=cargohold.Settings.load({}, signal_handlers=False),
    ) as a:
        memo = a.memo("sora", version="v2")

        def video(inputs: dict[str, Any], workdir: Path) -> Path:
            (workdir / "take.mp4").write_bytes(inputs["prompt"].encode() * 100)
            return workdir / "take.mp4"

        memo.get_or_create({"prompt": "demo 1"}, video)
        memo.get_or_create({"prompt": "demo 2"}, video)
        memo.get_or_create({"prompt": "not a demo"}, video)
        memo.get_or_create({"prompt": "text"}, Counter("a caption"))
        assert memo.export(seed, where={"prompt": "demo 1"}) == 1
        assert memo.export(seed, where={"prompt": "text"}) == 1
    digest = entry_digest("sora", "v2", {"prompt": "demo 1"})
    assert (seed / "sora" / "v2" / digest / "entry.json").exists()
    assert (seed / "sora" / "v2" / digest / "take.mp4").read_bytes() == b"demo 1" * 100

    # A fresh instance, no remote it can reach: the seed answers, nothing is built.
    unreachable = FileRemote("/sys/cargohold-unreachable")
    settings = cargohold.Settings.load({}, signal_handlers=False)
    with Hold(remote=unreachable, local_dir=tmp_path / "b", settings=settings) as b:
        memo = b.memo("sora", version="v2", seed_dir=seed)
        build = Counter()
        entry = memo.get_or_create({"prompt": "demo 1"}, build)
        assert (entry.hit, entry.source, build.calls) == (True, "seed", 0)
        assert entry.path is not None
        assert entry.path.read_bytes() == b"demo 1" * 100
        assert memo.get({"prompt": "text"}).value == "a caption"  # type: ignore[union-attr]
        assert b.memo("sora", version="v3", seed_dir=seed).get({"prompt": "demo 1"}) is None
        b.close(timeout=0)
    # The seed folder as a setting (CARGOHOLD_MEMO_SEED_DIR), for every memo of the Hold.
    settings = cargohold.Settings.load(
        {"CARGOHOLD_MEMO_SEED_DIR": str(seed)}, signal_handlers=False
    )
    with Hold(remote=unreachable, local_dir=tmp_path / "c", settings=settings) as c:
        entry = c.memo("sora", version="v2").get_or_create({"prompt": "demo 1"}, Counter())
        assert (entry.hit, entry.source) == (True, "seed")

        @c.memoize(namespace="sora", version="v2")  # the setting applies here too
        def generate(prompt: str) -> Path:
            raise AssertionError("a seeded prompt is never built")

        assert generate("demo 1").read_bytes() == b"demo 1" * 100
        c.close(timeout=0)


def test_collect_garbage_keeps_what_entries_use(hold: Hold) -> None:
    memo = hold.memo("gc")
    memo.get_or_create({"i": 1}, Counter(b"one" * 100))
    memo.get_or_create({"i": 2}, Counter(b"two" * 100))
    memo.delete({"i": 1})
    assert collect_garbage(hold, older_than=0) == 1
    assert memo.get({"i": 2}).value == b"two" * 100  # type: ignore[union-attr]
    assert len(list(hold.list("memo/blobs/"))) == 1


def test_a_build_longer_than_the_lease_ttl_keeps_its_lease(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two instances (two Holds, one remote): the holder renews its lease while its build
    outlasts the TTL (it runs until the waiter has said that it waits, 2 s at least); the
    waiter never takes over, and gets the holder's entry."""
    name = f"memo-renew-{uuid.uuid4().hex}"
    url = f"memory://{name}"
    builds: list[str] = []
    said = threading.Event()

    class Heard(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting" in record.getMessage():
                said.set()

    def slow(inputs: dict[str, Any], workdir: Path) -> bytes:
        builds.append(threading.current_thread().name)
        said.wait(30)  # the waiter logs after 2 s: two TTLs and more
        return b"the one take"

    heard = Heard()
    memo_log = logging.getLogger("cargohold.memo")
    memo_log.addHandler(heard)
    try:
        with (
            cargohold.open(url, data_dir=tmp_path / "a", signal_handlers=False) as first,
            cargohold.open(url, data_dir=tmp_path / "b", signal_handlers=False) as second,
            caplog.at_level(logging.INFO, logger="cargohold.memo"),
        ):
            holder = threading.Thread(
                target=lambda: first.memo("v", lease_ttl=1.0).get_or_create({"p": 1}, slow),
                name="holder",
            )
            holder.start()
            deadline = time.monotonic() + 10
            while not builds and time.monotonic() < deadline:
                time.sleep(0.01)
            entry = second.memo("v", lease_ttl=1.0).get_or_create({"p": 1}, slow)
            holder.join()
        assert said.is_set(), "the waiter said it was waiting"
        assert entry.value == b"the one take"
        assert builds == ["holder"], "the waiter never took over a lease that was renewed"
        waits = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
        assert all("being built by" in w for w in waits)
    finally:
        memo_log.removeHandler(heard)
        MemoryRemote.forget(name)
