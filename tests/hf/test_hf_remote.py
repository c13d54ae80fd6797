"""The Hugging Face remotes: the dataset-repo remote's commits, compare-and-swap, layout,
commit budget and errors, against the Hub stand-in; and hf-s3:// on the S3 gateway's.

The shared behaviour (round trips, listings, conditional puts, batches) is in the
conformance suite, which runs against hf:// too (tests/conformance/conftest.py).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

import cargohold
from cargohold import (
    AlreadyExists,
    ConfigError,
    NotFoundError,
    ObjectInfo,
    PermissionDenied,
    PreconditionFailed,
    RemoteUnavailable,
    Settings,
)
from cargohold.remotes import Put, open_remote
from cargohold.remotes.hf import CommitBudget, HfRemote, data_path, key_of, record_path
from cargohold.remotes.s3 import S3Remote
from tests.conftest import GATEWAY_NAMESPACE
from tests.hf.conftest import LFS_DATA_WARNING, UNLIMITED, hf_url
from testsupport.hubstandin import OTHER_TOKEN, READ_TOKEN, WRITE_TOKEN, Fault, HubStandIn
from testsupport.s3gateway import S3Gateway
from testsupport.servers import SeaweedFS

pytestmark = pytest.mark.filterwarnings(LFS_DATA_WARNING)

FAST_FAIL = UNLIMITED.replace(retry_timeout=1, max_retries=2, connect_timeout=1)


def _remote(url: str, settings: Settings = UNLIMITED) -> HfRemote:
    remote = open_remote(url, settings=settings)
    assert isinstance(remote, HfRemote)
    return remote


@pytest.fixture
def remote(hf_env: HubStandIn) -> Iterator[HfRemote]:
    with _remote(hf_url(hf_env)) as made:
        yield made


def _repo_of(remote: HfRemote) -> str:
    return remote.repo_id


def _commits(hub: HubStandIn, remote: HfRemote) -> int:
    """Commits made after the repo's initial one."""
    return hub.commit_count(remote.repo_id) - 1


# -- URLs -----------------------------------------------------------------------------


def test_url_forms(hf_env: HubStandIn) -> None:
    remote = _remote("hf://datasets/ana/app-data/outputs/v1")
    assert (remote.repo_id, remote.prefix, remote.revision) == (
        "ana/app-data",
        "outputs/v1",
        "main",
    )
    assert remote.endpoint == hf_env.endpoint  # from HF_ENDPOINT, read when built
    assert remote.url == f"hf://datasets/ana/app-data/outputs/v1?endpoint={hf_env.endpoint}"
    assert WRITE_TOKEN not in remote.url
    assert WRITE_TOKEN not in repr(remote)
    assert _remote("hf://datasets/ana/app-data@dev").revision == "dev"
    assert _remote("hf://datasets/ana/app-data?revision=dev").revision == "dev"
    other = _remote("hf://datasets/ana/x?endpoint=http://127.0.0.1:9")
    assert other.endpoint == "http://127.0.0.1:9"
    for bad, message in [
        ("hf://models/ana/x", "dataset repo"),
        ("hf://datasets/ana", "names no repo"),
        ("hf://datasets/ana/x?token=abc", "unknown hf:// URL parameter"),
        ("hf://datasets/ana/x/../up", "bad prefix"),
        ("hf://datasets/an a/x", "not a dataset repo id"),
        ("hf://datasets/ana/x?endpoint=http://10.0.0.7", "plain http"),
    ]:
        with pytest.raises(ConfigError, match=message):
            open_remote(bad)


def test_hf_bucket_is_the_s3_remote_on_the_hubs_s3_endpoint(
    monkeypatch: pytest.MonkeyPatch,
    seaweedfs: SeaweedFS,
    seaweedfs_bucket: str,
    hub_gateway: S3Gateway,
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with pytest.raises(ConfigError, match="S3 credentials"):
        open_remote("hf-s3://ana/app-data")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    default = open_remote("hf-s3://ana/app-data/outputs")  # nothing is contacted yet
    assert isinstance(default, S3Remote)
    assert (default.endpoint, default.bucket, default.prefix) == (
        "https://s3.hf.co/ana",
        "app-data",
        "outputs",
    )
    # The endpoint is a setting: here the gateway's stand-in (tests/hf/test_s3_gateway.py).
    settings = Settings.load({}, hf_bucket_endpoint=hub_gateway.endpoint + "/{namespace}")
    prefix = f"hfb-{uuid.uuid4().hex[:8]}"
    url = f"hf-s3://{GATEWAY_NAMESPACE}/{seaweedfs_bucket}/{prefix}"
    with open_remote(url, settings=settings) as bucket:
        assert bucket.url == url
        bucket.put("claim", b"first", mode="create")
        with pytest.raises(AlreadyExists):
            bucket.put("claim", b"second", mode="create")
        assert bucket.get("claim") == b"first"


# -- layout ---------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["", "app/v1"])
def test_layout_maps_keys_one_to_one(base: str) -> None:
    keys = [
        "a",
        "a/b",
        "outputs/take_1.png",
        "vidéos/日本語/x y.mp4",
        ".cargohold/leases/x",
        "a.d/b",
    ]
    paths = {data_path(base, key) for key in keys} | {record_path(base, key) for key in keys}
    assert len(paths) == 2 * len(keys)
    for key in keys:
        assert key_of(base, data_path(base, key)) == key
        assert key_of(base, record_path(base, key)) is None
    assert key_of(base, f"{base}/README.md".lstrip("/")) is None
    assert key_of(base, ".gitattributes") is None
    # The example docs/huggingface.md gives:
    assert data_path("PREFIX", "outputs/take_1.png") == "PREFIX/7b.d/outputs/6f/take_1.png"
    assert record_path("PREFIX", "outputs/take_1.png") == "PREFIX/7b.d/outputs/6f.m/take_1.png.json"


@pytest.mark.slow
def test_no_folder_reaches_the_hubs_cap(hf_env: HubStandIn) -> None:
    # The stand-in refuses a commit that leaves a folder with more than 10,000 entries,
    # as the Hub does...
    repo = hf_env.create_repo(f"tester/cap-{uuid.uuid4().hex[:8]}")
    api = HfApi(endpoint=hf_env.endpoint, token=WRITE_TOKEN)
    files = [CommitOperationAdd(f"flat/{i:05d}.json", b"{}") for i in range(10_001)]
    with pytest.raises(Exception, match="Too many entries"):
        api.create_commit(repo, files, commit_message="flat", repo_type="dataset")
    # ...and 10,001 keys in one folder of keys go in, since no folder of the layout fills.
    with _remote(f"hf://datasets/{repo}") as remote:
        keys = [f"flat/{i:05d}.json" for i in range(10_001)]
        for start in range(0, len(keys), 2_000):
            results = remote.put_many([Put(k, b"{}") for k in keys[start : start + 2_000]])
            assert all(isinstance(r, ObjectInfo) for r in results)
        assert sum(1 for _ in remote.list("flat/")) == 10_001
    assert hf_env.largest_folder(repo) <= 768


# -- commits --------------------------------------------------------------------------


def test_a_batch_is_one_commit_of_at_most_100_files(hf_env: HubStandIn, remote: HfRemote) -> None:
    remote.put("gone/1", b"x")
    before = _commits(hf_env, remote)
    puts, deletes = remote.apply(
        [Put(f"b/{i:03d}", f"{i}".encode()) for i in range(250)], ["gone/1", "never/was"]
    )
    assert all(isinstance(r, ObjectInfo) for r in puts)
    assert deletes == [None, None]
    assert _commits(hf_env, remote) - before == 3  # 252 changes in commits of 100 files
    files = hf_env.files(remote.repo_id)
    assert data_path("", "gone/1") not in files  # a real deletion
    assert files[data_path("", "b/042")] == b"42"


def test_unchanged_rewrites_cost_no_commit(hf_env: HubStandIn, remote: HfRemote) -> None:
    first = remote.put("same", b"bytes", metadata={"m": "1"})
    before = _commits(hf_env, remote)
    again = remote.put("same", b"bytes", metadata={"m": "1"})
    assert again.etag == first.etag
    assert _commits(hf_env, remote) == before
    remote.put("same", b"bytes", metadata={"m": "2"})  # only the record changes
    assert _commits(hf_env, remote) == before + 1
    assert remote.head("same").metadata == {"m": "2"}


def test_concurrent_puts_share_commits_and_grow_when_the_budget_is_short(
    hf_env: HubStandIn,
) -> None:
    # One commit now, then one a second: the 20 puts racing in meanwhile queue up and go
    # in the next commit together.
    url = hf_url(hf_env)
    remote = HfRemote.from_url(url, settings=UNLIMITED)
    remote.budget = CommitBudget(3600, burst=1)
    barrier = threading.Barrier(20)

    def put(i: int) -> ObjectInfo:
        barrier.wait()
        return remote.put(f"burst/{i}", f"{i}".encode())

    with remote, ThreadPoolExecutor(20) as pool:
        results = list(pool.map(put, range(20)))
        assert [r.key for r in results] == [f"burst/{i}" for i in range(20)]
        assert _commits(hf_env, remote) <= 3
        assert remote.stats()["commit_budget"]["commits"] == _commits(hf_env, remote)  # type: ignore[index]
        assert sorted(i.key for i in remote.list("burst/")) == sorted(
            f"burst/{i}" for i in range(20)
        )


def test_a_conflict_replans_on_the_new_head(hf_env: HubStandIn) -> None:
    url = hf_url(hf_env)
    with _remote(url) as a, _remote(url) as b:
        a.put("from-a", b"1")
        b.put("from-b", b"1")  # b now knows the head as its own last commit
        a.put("from-a-again", b"2")  # ...which this moves
        b.put("from-b-again", b"2")  # 412, planned again on the new head
        conflicts = [r for r in hf_env.requests if r[2] == 412 and a.repo_id in r[1]]
        assert conflicts, "b's stale parent must have been refused"
        assert {i.key for i in a.list()} == {"from-a", "from-b", "from-a-again", "from-b-again"}


def test_two_writers_committing_at_once_lose_nothing(hf_env: HubStandIn) -> None:
    """Two remotes (as two processes would be) write batches and compare-and-swap one
    counter on the same repo at the same time: every write and every increment lands."""
    url = hf_url(hf_env)
    counter = "shared/counter"
    with _remote(url) as setup:
        setup.put(counter, b"0")

    def writer(name: str) -> None:
        with _remote(url) as remote:
            for batch in range(10):
                keys = [f"{name}/{batch}/{i}" for i in range(15)]
                puts, _ = remote.apply([Put(k, k.encode()) for k in keys], [])
                assert all(isinstance(r, ObjectInfo) for r in puts), puts
                while True:  # increment: read, then write if nobody else did meanwhile
                    info = remote.head(counter)
                    value = int(remote.get(counter))
                    try:
                        remote.put(counter, str(value + 1).encode(), if_match=info.etag)
                        break
                    except PreconditionFailed:
                        continue

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(writer, ["w1", "w2"]))
    with _remote(url) as check:
        keys = {info.key for info in check.list()}
        expected = {f"{w}/{b}/{i}" for w in ("w1", "w2") for b in range(10) for i in range(15)}
        assert expected <= keys
        assert check.get("w2/9/14") == b"w2/9/14"
        assert check.get(counter) == b"20"


def test_create_only_is_compare_and_swap_across_writers(hf_env: HubStandIn) -> None:
    url = hf_url(hf_env)
    remotes = [_remote(url) for _ in range(6)]
    barrier = threading.Barrier(6)

    def claim(i: int) -> object:
        barrier.wait()
        try:
            return remotes[i].put("claims/job", f"worker {i}".encode(), mode="create")
        except AlreadyExists as exc:
            return exc

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(claim, range(6)))
    winners = [i for i, r in enumerate(results) if isinstance(r, ObjectInfo)]
    assert len(winners) == 1, results
    assert remotes[0].get("claims/job") == f"worker {winners[0]}".encode()
    for remote in remotes:
        remote.close()


def test_metadata_of_bytes_replaced_by_another_tool_is_not_trusted(
    hf_env: HubStandIn, remote: HfRemote
) -> None:
    remote.put("doc.txt", b"v1", metadata={"author": "ana"}, content_type="text/x-custom")
    api = HfApi(endpoint=hf_env.endpoint, token=WRITE_TOKEN)
    api.create_commit(  # someone edits the file on the Hub, not through cargohold
        remote.repo_id,
        [CommitOperationAdd(data_path("", "doc.txt"), b"edited on the Hub")],
        commit_message="edit",
        repo_type="dataset",
    )
    info = remote.head("doc.txt")
    assert remote.get("doc.txt") == b"edited on the Hub"
    assert (info.metadata, info.content_type) == ({}, "text/plain")


def test_large_files_go_through_lfs_when_xet_is_off(hf_env: HubStandIn, remote: HfRemote) -> None:
    # HF_HUB_DISABLE_XET=1 is read when the remote is built, so it holds even though
    # huggingface_hub may have been imported (and have read it) before.
    data = os.urandom(11_000_000)
    before = len(hf_env.requests)  # the stand-in is shared: buckets' tests speak Xet
    info = remote.put("big/model.bin", data)
    assert len(info.etag) == 64  # an LFS file's etag is its sha256
    assert remote.get("big/model.bin", range=(10_999_990, None)) == data[-10:]
    paths = [path for _, path, _ in hf_env.requests[before:]]
    assert any("/info/lfs/objects/batch" in p for p in paths)
    assert not any("xet" in p for p in paths)


# -- the commit budget ----------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_is_a_token_bucket() -> None:
    clock = _Clock()
    budget = CommitBudget(60, clock=clock)  # one a minute, ten minutes' worth saved up
    assert budget.burst == 10
    stop = threading.Event()
    for _ in range(10):
        budget.take(0, stop)
    assert budget.wait_time() == pytest.approx(60)
    with pytest.raises(Exception, match="budget is spent"):
        budget.take(30, stop)
    clock.now += 60
    budget.take(0, stop)
    budget.refund()
    budget.take(0, stop)
    assert budget.snapshot()["commits"] == 11
    with pytest.raises(ConfigError, match="hf_commits_per_hour"):
        CommitBudget(0)


def test_a_429_pauses_the_budget_and_slows_its_rate() -> None:
    clock = _Clock()
    budget = CommitBudget(1000, clock=clock)
    headers = {
        "RateLimit": '"commits";r=0;t=120',
        "RateLimit-Policy": '"fixed window";"commits";q=128;w=3600',
    }
    assert budget.rate_limited(headers, "You have exceeded the rate limit") == 120
    snapshot = budget.snapshot()
    assert snapshot["commits_per_hour"] == pytest.approx(128 * 0.9)
    assert snapshot["paused_for_seconds"] == 120
    assert snapshot["rate_limited"] == 1
    assert budget.wait_time() > 120
    clock.now += 3601
    assert budget.snapshot()["commits_per_hour"] == 1000  # an hour later: back to normal
    # Without headers, the Hub's message says how long and how many.
    message = "You have exceeded the rate limit for repository commits (128 per hour). You can retry this action in 43 minutes."
    assert budget.rate_limited({}, message) == 43 * 60
    assert budget.snapshot()["commits_per_hour"] == pytest.approx(128 * 0.9)
    budget.rate_limited({"Retry-After": "7"}, "")  # no policy: half the rate
    assert budget.snapshot()["commits_per_hour"] == pytest.approx(128 * 0.9 / 2)


def test_the_hubs_429_is_waited_out_and_shown_in_stats() -> None:
    with HubStandIn(commit_limit=(3, 2.0)) as hub:
        hub_env = hub.env()
        repo = hub.create_repo(f"tester/rl-{uuid.uuid4().hex[:8]}")
        remote = HfRemote(
            repo, endpoint=hub.endpoint, token=hub_env["HF_TOKEN"], settings=UNLIMITED,
            environ=hub_env,
        )  # fmt: skip
        with remote:
            for i in range(5):
                remote.put(f"k{i}", b"x")  # the 4th commit meets 429 and waits ~2 s
            budget = remote.stats()["commit_budget"]
            assert isinstance(budget, dict)
            assert budget["rate_limited"] >= 1
            assert budget["commits_per_hour"] <= 3 * 3600 / 2 * 0.9
            assert "rate limit for repository commits" in str(budget["last_rate_limit"])
            assert sorted(i.key for i in remote.list()) == [f"k{i}" for i in range(5)]


def test_a_long_pause_fails_fast_and_says_when_commits_resume() -> None:
    with HubStandIn(commit_limit=(1, 3600)) as hub:
        env = hub.env()
        repo = hub.create_repo(f"tester/rl-{uuid.uuid4().hex[:8]}")
        with HfRemote(repo, endpoint=hub.endpoint, settings=FAST_FAIL, environ=env) as remote:
            remote.put("first", b"x")
            with pytest.raises(RemoteUnavailable):
                remote.put("second", b"x")
            commits_asked = sum(1 for r in hub.requests if "/commit/" in r[1])
            with pytest.raises(RemoteUnavailable, match=r"no commit to datasets/.* until"):
                remote.put("third", b"x")
            assert sum(1 for r in hub.requests if "/commit/" in r[1]) == commits_asked
            assert remote.get("first") == b"x"  # reads are not rationed


# -- faults and errors ----------------------------------------------------------------


def test_5xx_answers_are_retried(hf_env: HubStandIn, remote: HfRemote) -> None:
    repo = remote.repo_id
    hf_env.inject(Fault(503, times=2, match=lambda m, p: m == "POST" and f"{repo}/commit/" in p))
    hf_env.inject(Fault(502, times=1, match=lambda m, p: "paths-info" in p and repo in p))
    assert remote.put("k", b"v").key == "k"
    assert remote.get("k") == b"v"


def test_a_listing_page_is_retried_by_huggingface_hub_alone(
    hf_env: HubStandIn, remote: HfRemote
) -> None:
    # list_repo_tree retries its pages itself (http_backoff): the remote adds no loop of
    # its own around it, so one 502 costs exactly one more request.
    repo = remote.repo_id
    remote.put_many([Put(f"l/{i}", b"x") for i in range(3)])
    hf_env.inject(Fault(502, times=1, match=lambda m, p: "/tree/" in p and repo in p))
    before = len(hf_env.requests)
    assert [info.key for info in remote.list("l/")] == ["l/0", "l/1", "l/2"]
    trees = [r for r in hf_env.requests[before:] if "/tree/" in r[1] and repo in r[1]]
    assert [status for _, _, status in trees] == [502, 200]


def test_requests_through_huggingface_hub_carry_the_remotes_timeouts(
    hf_env: HubStandIn, remote: HfRemote
) -> None:
    # huggingface_hub's shared HTTP client has no timeout: without the remote's own, a Hub
    # that never answers would hold head() for as long as it likes.
    repo = remote.repo_id
    remote.put("k", b"v")
    impatient = UNLIMITED.replace(request_timeout=0.5, retry_timeout=0, max_retries=0)
    slow = Fault(None, times=1, delay=5, match=lambda m, p: "paths-info" in p and repo in p)
    with _remote(remote.url, impatient) as other:
        hf_env.inject(slow)
        with pytest.raises(RemoteUnavailable, match="did not answer"):
            other.head("k")
    assert remote.head("k").size == 1  # the fault is spent: the next request is answered


def test_an_unreachable_hub_is_remote_unavailable(hf_env: HubStandIn) -> None:
    with HfRemote("tester/x", endpoint="http://127.0.0.1:9", settings=FAST_FAIL) as remote:
        with pytest.raises(RemoteUnavailable, match="did not answer"):
            remote.get("k")
        with pytest.raises(RemoteUnavailable):
            remote.put("k", b"v")


def test_a_missing_repo_is_a_config_error_or_created(hf_env: HubStandIn) -> None:
    name = f"tester/missing-{uuid.uuid4().hex[:8]}"
    with _remote(f"hf://datasets/{name}") as remote:
        with pytest.raises(ConfigError, match="hf_create_repo") as raised:
            remote.put("k", b"v")
        assert WRITE_TOKEN not in str(raised.value)
        assert "HF_TOKEN" in str(raised.value)
    with _remote(f"hf://datasets/{name}", UNLIMITED.replace(hf_create_repo=True)) as remote:
        with pytest.raises(NotFoundError):
            remote.get("k")  # created on first use, private, empty
        remote.put("k", b"v")
    api = HfApi(endpoint=hf_env.endpoint, token=WRITE_TOKEN)
    assert api.dataset_info(name).private is True


def test_tokens_that_cannot_write_say_why(
    hf_env: HubStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = hf_url(hf_env)
    with _remote(url) as writer:
        writer.put("k", b"v")
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with _remote(url) as reader:
        assert reader.get("k") == b"v"
        with pytest.raises(PermissionDenied, match="read-only token") as raised:
            reader.put("k", b"w")
        assert READ_TOKEN not in str(raised.value)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with _remote(url) as refused, pytest.raises(PermissionDenied, match="invalid or expired"):
        refused.get("k")
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)  # a write token, but of another user
    with _remote(url) as stranger, pytest.raises(PermissionDenied, match="may not write"):
        stranger.put("k", b"w")


def test_private_and_gated_repos(hf_env: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    private = hf_url(hf_env, private=True)
    with _remote(private) as owner:
        owner.put("k", b"v")
        repo = owner.repo_id
    with (
        HfRemote(repo, token=False, settings=UNLIMITED) as anonymous,
        pytest.raises(ConfigError, match=r"private and an anonymous caller .* cannot see it"),
    ):
        anonymous.get("k")
    gated_repo = hf_env.create_repo(f"tester/gated-{uuid.uuid4().hex[:8]}", gated=True)
    with HfRemote(gated_repo, settings=UNLIMITED, token=WRITE_TOKEN) as owner:
        owner.put("k", b"v")
    monkeypatch.setenv("HF_TOKEN", OTHER_TOKEN)
    with _remote(f"hf://datasets/{gated_repo}") as other:
        with pytest.raises(PermissionDenied, match="gated"):
            other.get("k")
        hf_env.allow(gated_repo, "other")
        assert other.get("k") == b"v"


def test_a_missing_branch(hf_env: HubStandIn) -> None:
    with (
        _remote(hf_url(hf_env) + "?revision=nope") as remote,
        pytest.raises(ConfigError, match="no branch 'nope'"),
    ):
        list(remote.list())


def test_keys_the_hub_refuses_are_invalid_keys(remote: HfRemote) -> None:
    results = remote.put_many([Put("ok", b"1"), Put("a/.git/config", b"2")])
    assert isinstance(results[0], ObjectInfo)
    assert isinstance(results[1], cargohold.InvalidKey)


def test_status_shows_the_commit_budget(hf_env: HubStandIn, tmp_path: object) -> None:
    with cargohold.open(
        hf_url(hf_env), data_dir=tmp_path, signal_handlers=False, hf_commits_per_hour=1e9
    ) as hold:
        hold.put("k", b"v")
        hold.flush(30)
        budget = hold.status().remote_stats["commit_budget"]
        assert isinstance(budget, dict)
        assert budget["commits"] == 1
        assert budget["configured_per_hour"] == 1e9
        assert "commits/h" in str(budget["summary"])


def test_doctor_shows_the_commit_budget(hf_env: HubStandIn, tmp_path: Path) -> None:
    from cargohold.cli import doctor_text
    from cargohold.doctor import diagnose

    settings = cargohold.Settings.load(
        {}, remote=hf_url(hf_env), data_dir=tmp_path, hf_commits_per_hour=120
    )
    report = diagnose(settings)
    budget = report.remote.stats["commit_budget"]
    assert budget["configured_per_hour"] == 120
    assert report.remote.create_only_honoured is True
    assert "commit budget: 120 commits/h" in doctor_text(report)


def test_the_token_is_never_logged_or_shown(
    hf_env: HubStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, cargohold's and the libraries', at DEBUG
    url = hf_url(hf_env)
    seen: list[str] = []
    with _remote(url) as writer:
        repo = writer.repo_id
        hf_env.inject(Fault(503, times=2, match=lambda m, p: m == "POST" and repo in p))
        writer.put("k", b"v")  # retried: the retries are logged
        seen += [repr(writer), writer.url, str(writer.stats())]
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with _remote(url) as reader, pytest.raises(PermissionDenied) as raised:
        reader.put("k", b"w")
    seen.append(str(raised.value))
    with cargohold.open(url, data_dir=tmp_path, signal_handlers=False) as hold:
        seen.append(str(hold.status()))
    text = caplog.text + "\n".join(seen)
    assert "503" in caplog.text or "retry" in caplog.text.lower(), "the retries were logged"
    for token in (WRITE_TOKEN, READ_TOKEN):
        assert token not in text
