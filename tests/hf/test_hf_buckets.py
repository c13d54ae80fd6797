"""The ``hf://buckets/`` remote on the Hub stand-in's buckets (testsupport/hubbuckets.py):
what is specific to the bucket API. The protocol itself is held by tests/conformance.

Bytes go through hf_xet into the stand-in's local CAS, so etags are real Xet hashes.
"""

from __future__ import annotations

import os
from pathlib import Path

import hf_xet
import pytest
from huggingface_hub import HfApi

import cargohold
from cargohold import ConfigError, NotFoundError, RemoteError, RemoteUnavailable, Settings
from cargohold.cli import check_remote
from cargohold.doctor import diagnose
from cargohold.remotes import ObjectInfo, Put, open_remote
from cargohold.remotes.hf_buckets import HfBucketRemote
from tests.hf.conftest import UNLIMITED, bucket_url
from testsupport.hubbuckets import BatchFault
from testsupport.hubstandin import READ_TOKEN, WRITE_TOKEN, Fault, HubStandIn


def _bucket(url: str) -> str:
    return "/".join(url.split("buckets/", 1)[1].split("/")[:2])


def _xet_hash(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / f"hash-{os.urandom(4).hex()}"
    path.write_bytes(data)
    return str(hf_xet.hash_files([str(path)])[0].hash)


# -- the URL ----------------------------------------------------------------------------


def test_urls_name_the_bucket_prefix_and_endpoint(hf_env: HubStandIn) -> None:
    remote = open_remote(f"hf://buckets/ana/app-data/outputs/v1?endpoint={hf_env.endpoint}")
    assert isinstance(remote, HfBucketRemote)
    assert (remote.bucket_id, remote.prefix, remote.endpoint) == (
        "ana/app-data",
        "outputs/v1",
        hf_env.endpoint,
    )
    assert remote.url == f"hf://buckets/ana/app-data/outputs/v1?endpoint={hf_env.endpoint}"
    assert not remote.conditional_writes


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("hf://buckets/ana", "names no Storage Bucket"),
        ("hf://buckets/ana/app-data?revision=main", "unknown hf:// URL parameter"),
        ("hf://buckets/ana/app-data/../up", "bad prefix"),
        ("hf://buckets/ana/bad name", "not a bucket id"),
        ("hf://models/ana/model", "names neither a dataset repo nor a bucket"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_remote(url)


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError, match="https"):
        open_remote("hf://buckets/ana/app-data?endpoint=http://hub.example.com")


# -- what lands in the bucket -----------------------------------------------------------


def test_bytes_go_through_xet_and_the_etag_is_their_xet_hash(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    url = bucket_url(hf_env, "app")
    data = os.urandom(200_000)
    with open_remote(url, settings=UNLIMITED) as remote:
        info = remote.put("clips/a.bin", data)
        assert info.etag == _xet_hash(data, tmp_path)
        stored = hf_env.buckets.paths(_bucket(url))
        assert stored == {"app/clips/a.bin": info.etag}  # no record: nothing to describe
        assert hf_env.buckets.files(_bucket(url))["app/clips/a.bin"] == data
        assert remote.head("clips/a.bin").etag == info.etag
        assert remote.get("clips/a.bin", range=(1000, 1010)) == data[1000:1010]


def test_metadata_lives_in_a_record_that_names_its_hash(hf_env: HubStandIn) -> None:
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    with open_remote(url, settings=UNLIMITED) as remote:
        remote.put("page", b"<p>", metadata={"Prompt": "a cat"}, content_type="text/html")
        assert set(hf_env.buckets.paths(bucket)) == {"page", ".cargohold/records/page.json"}
        assert [i.key for i in remote.list()] == ["page"]
        head = remote.head("page")
        assert (head.metadata, head.content_type) == ({"prompt": "a cat"}, "text/html")
        # Another tool replaces the bytes: the record describes other bytes now.
        HfApi(endpoint=hf_env.endpoint, token=WRITE_TOKEN).batch_bucket_files(
            bucket, add=[(b"<p>other", "page")]
        )
        head = remote.head("page")
        assert (head.metadata, head.content_type) == ({}, "application/octet-stream")
        # A put without metadata drops the old record in the same batch.
        remote.put("page", b"<p>")
        assert set(hf_env.buckets.paths(bucket)) == {"page"}
        assert remote.head("page").metadata == {}
        remote.put("page", b"x", metadata={"n": "1"})
        remote.delete("page")
        assert hf_env.buckets.paths(bucket) == {}


def test_files_other_tools_put_under_the_prefix_are_keys(hf_env: HubStandIn) -> None:
    url = bucket_url(hf_env, "app")
    api = HfApi(endpoint=hf_env.endpoint, token=WRITE_TOKEN)
    api.batch_bucket_files(
        _bucket(url),
        add=[(b"mine", "app/from-cli.txt"), (b"not mine", "apple"), (b"x", "other/app")],
    )
    with open_remote(url, settings=UNLIMITED) as remote:
        assert [(i.key, i.size) for i in remote.list()] == [("from-cli.txt", 4)]
        assert remote.get("from-cli.txt") == b"mine"
        assert remote.head("from-cli.txt").content_type == "text/plain"


def test_listing_sorts_what_the_hub_pages_in_its_own_order(hf_env: HubStandIn) -> None:
    url = bucket_url(hf_env)
    keys = [f"p/{i % 3}/{i:04d}" for i in range(1100)] + ["p-x", "p/0-", "p0"]
    with open_remote(url, settings=UNLIMITED) as remote:
        assert all(isinstance(r, ObjectInfo) for r in remote.put_many([Put(k, b"") for k in keys]))
        assert [i.key for i in remote.list()] == sorted(keys, key=lambda k: k.encode())
        assert [i.key for i in remote.list("p/0")] == sorted(
            (k for k in keys if k.startswith("p/0")), key=lambda k: k.encode()
        )
    pages = [r for r in hf_env.requests if "/tree" in r[1] and _bucket(url) in r[1]]
    assert len(pages) >= 2, "1,100 files take two pages of the tree"


# -- batches: what landed and what did not ----------------------------------------------


def test_a_path_the_hub_lists_as_failed_fails_only_its_key(hf_env: HubStandIn) -> None:
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    with open_remote(url, settings=UNLIMITED) as remote:
        remote.put("old", b"old")
        hf_env.buckets.inject(BatchFault(failing={"b": "injected: refused"}, bucket_id=bucket))
        puts, deletes = remote.apply([Put("a", b"a"), Put("b", b"b")], ["old"])
        assert isinstance(puts[0], ObjectInfo)
        assert isinstance(puts[1], RemoteError)
        assert puts[1].key == "b"
        assert "injected: refused" in str(puts[1])
        assert deletes == [None]
        assert set(hf_env.buckets.paths(bucket)) == {"a"}
        # Every operation failing is a 422: each key gets its error.
        hf_env.buckets.inject(BatchFault(failing={"c": "no", "d": "no"}, bucket_id=bucket))
        results = remote.put_many([Put("c", b"c"), Put("d", b"d")])
        assert [type(r) for r in results] == [RemoteError, RemoteError]
        assert set(hf_env.buckets.paths(bucket)) == {"a"}
    assert any(status == 422 for _, path, status in hf_env.requests if bucket in path)


@pytest.mark.parametrize("spelled", [None, "/b", "other"])
def test_a_failure_naming_no_path_sent_fails_the_whole_call_unless_read_back(
    hf_env: HubStandIn, spelled: str | None
) -> None:
    # A failure the client cannot match to a path it sent may be any of them: each is
    # read back, and only what the bucket holds counts as done.
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    with open_remote(url, settings=UNLIMITED) as remote:
        hf_env.buckets.inject(
            BatchFault(failing={"b": "injected"}, spelled={"b": spelled}, bucket_id=bucket)
        )
        results = remote.put_many([Put("a", b"a"), Put("b", b"b")])
        assert isinstance(results[0], ObjectInfo)
        assert isinstance(results[1], RemoteError), "put as done, though the bucket lacks it"
        assert set(hf_env.buckets.paths(bucket)) == {"a"}


def test_a_lost_answer_is_retried_and_the_replay_is_harmless(hf_env: HubStandIn) -> None:
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    with open_remote(url, settings=UNLIMITED) as remote:
        hf_env.buckets.inject(BatchFault(answer="lost", bucket_id=bucket))
        info = remote.put("k", b"value")
        assert remote.head("k").etag == info.etag
    sent = [lines for b, lines in hf_env.buckets.batches if b == bucket]
    assert len(sent) == 2, "huggingface_hub sends the batch again after the lost answer"


def test_an_unknown_outcome_is_read_back_and_only_what_landed_counts(
    hf_env: HubStandIn,
) -> None:
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    with open_remote(url, settings=UNLIMITED) as remote:
        remote.put("gone", b"1")
        remote.put("kept", b"2")
        # Every attempt (huggingface_hub's first and its 5 retries) applies "landed" and the
        # delete of "gone", skips "lost" and the delete of "kept", and answers 503.
        hf_env.buckets.inject(
            BatchFault(unapplied={"lost", "kept"}, answer="503", times=6, bucket_id=bucket)
        )
        puts, deletes = remote.apply([Put("landed", b"a"), Put("lost", b"b")], ["gone", "kept"])
        assert isinstance(puts[0], ObjectInfo)
        assert isinstance(puts[1], RemoteUnavailable)
        assert deletes[0] is None
        assert isinstance(deletes[1], RemoteUnavailable)
        assert set(hf_env.buckets.paths(bucket)) == {"landed", "kept"}


def test_batches_never_pass_1000_operations_nor_name_a_path_twice(
    hf_env: HubStandIn,
) -> None:
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    keys = [f"k/{i:04d}" for i in range(1200)]
    with open_remote(url, settings=UNLIMITED) as remote:
        results = remote.put_many([Put(k, k.encode()) for k in keys] + [Put("k/0000", b"last")])
        assert all(isinstance(r, ObjectInfo) for r in results)
        assert remote.get("k/0000") == b"last"
        assert len(list(remote.list("k/"))) == 1200
    sent = [lines for b, lines in hf_env.buckets.batches if b == bucket]
    assert len(sent) >= 3
    for lines in sent:
        assert len(lines) <= 1000
        paths = [line["path"] for line in lines]
        assert len(paths) == len(set(paths))


def test_a_rate_limit_is_waited_out_by_huggingface_hub(hf_env: HubStandIn) -> None:
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    hf_env.inject(
        Fault(
            429,
            match=lambda method, path: method == "POST" and path.endswith(f"{bucket}/batch"),
            headers={
                "RateLimit": '"api";r=0;t=0',
                "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
            },
        )
    )
    with open_remote(url, settings=UNLIMITED) as remote:
        assert remote.put("k", b"v").size == 1
    assert any(s == 429 for _, p, s in hf_env.requests if p.endswith(f"{bucket}/batch"))


def test_requests_carry_the_remotes_timeouts(hf_env: HubStandIn) -> None:
    # huggingface_hub's shared HTTP client has no timeout: without the remote's own, a Hub
    # that takes a request and never answers holds the call (and the syncer) for ever.
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    with open_remote(url, settings=UNLIMITED) as remote:
        remote.put("k", b"v", metadata={"m": "1"})
    impatient = UNLIMITED.replace(request_timeout=0.5, retry_timeout=0, max_retries=0)
    for where in ("paths-info", "/resolve/", "/batch"):
        # Two stalled answers: each is given up after request_timeout and asked again
        # (huggingface_hub's retries), so both are spent by the time the call returns.
        stalled = Fault(None, times=2, delay=5, match=lambda m, p, w=where: w in p and bucket in p)
        hf_env.inject(stalled)
        with open_remote(url, settings=impatient) as remote:
            if where == "/batch":
                remote.put("k", b"v2")
            else:
                assert remote.head("k").metadata == {"m": "1"}
        assert stalled.times == 0, f"a stalled {where} answer was waited for, not timed out"


# -- errors ----------------------------------------------------------------------------


def test_a_missing_bucket_is_a_config_error_or_is_created(hf_env: HubStandIn) -> None:
    url = "hf://buckets/tester/never-made-" + os.urandom(4).hex()
    with open_remote(url, settings=UNLIMITED) as remote:
        with pytest.raises(ConfigError, match="CARGOHOLD_HF_CREATE_REPO"):
            remote.put("k", b"v")
        with pytest.raises(ConfigError, match="does not exist"):
            list(remote.list())
    with open_remote(url, settings=UNLIMITED.replace(hf_create_repo=True)) as remote:
        remote.put("k", b"v")
        assert remote.get("k") == b"v"
    info = HfApi(endpoint=hf_env.endpoint, token=WRITE_TOKEN).bucket_info(_bucket(url))
    assert info.private


def test_a_read_token_cannot_write(hf_env: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    url = bucket_url(hf_env)
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with open_remote(url, settings=UNLIMITED) as remote:
        with pytest.raises(cargohold.PermissionDenied, match="write access"):
            remote.put("k", b"v")
        with pytest.raises(NotFoundError):
            remote.get("k")


# -- the Hold on a bucket ----------------------------------------------------------------


def test_the_hold_syncs_and_refuses_what_the_bucket_cannot_enforce(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    url = bucket_url(hf_env)
    bucket = _bucket(url)
    hold = cargohold.open(url, data_dir=tmp_path, signal_handlers=False)
    try:
        hold.put("a.json", b"{}", metadata={"by": "hold"})
        with pytest.raises(ConfigError, match="hf-bucket://"):
            hold.put("b", b"x", mode="create")
        with pytest.raises(ConfigError, match="hf-bucket://"):
            hold.put("a.json", b"x", if_match="whatever")
        with pytest.raises(ConfigError, match="CARGOHOLD_CATALOG"):
            hold.memo("gen")
        hold.flush(60)
        assert hold.get("a.json") == b"{}"
        assert set(hf_env.buckets.paths(bucket)) == {"a.json", ".cargohold/records/a.json.json"}
        # A batch the Hub takes only in part: the rest is sent again.
        hf_env.buckets.inject(BatchFault(failing={"c": "injected"}, bucket_id=bucket))
        hold.put("c", b"c")
        hold.put("d", b"d")
        hold.flush(60)
        assert {"c", "d"} <= set(hf_env.buckets.paths(bucket))
        assert hold.status().pending_count == 0
    finally:
        hold.close()


def test_sqlite_replication_is_refused_on_a_bucket_before_anything_is_done(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    # Its writer lease and its segments are conditional puts on the remote itself: the
    # catalog cannot stand in for them, so the error must not send the user to configure one.
    url = bucket_url(hf_env)
    hold = cargohold.open(url, data_dir=tmp_path / "data", signal_handlers=False)
    try:
        with pytest.raises(ConfigError, match="hf-bucket://") as raised:
            hold.sqlite("app", path=tmp_path / "app.db")
        assert "CATALOG" not in f"{raised.value} {raised.value.hint}"
        assert not (tmp_path / "app.db").exists()
        assert hf_env.buckets.paths(_bucket(url)) == {}
    finally:
        hold.close()


def test_shared_downloads_need_a_catalog_on_a_bucket(hf_env: HubStandIn, tmp_path: Path) -> None:
    hold = cargohold.open(
        bucket_url(hf_env), data_dir=tmp_path, signal_handlers=False, fetch_to_remote=True
    )
    try:
        with pytest.raises(ConfigError, match="fetch_to_remote"):
            hold.fetch("http://127.0.0.1:9/never-contacted")
    finally:
        hold.close()


def test_the_checks_expect_the_refusal_the_remote_declares(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    with open_remote(bucket_url(hf_env), settings=UNLIMITED) as remote:
        steps = {step.name: step for step in check_remote(remote)}
        assert all(step.ok for step in steps.values()), steps
        assert "refused" in steps["create-only"].detail
        assert "refused" in steps["if-match"].detail
        report = diagnose(Settings.load({}, data_dir=tmp_path / "data"), remote=remote)
        assert report.remote.create_only_honoured is None
        assert [s["name"] for s in report.remote.steps if not s["ok"]] == []
        [problem] = [p for p in report.problems if "cannot enforce create-only" in p.what]
        assert problem.severity == "warning"
        assert "CARGOHOLD_CATALOG" in problem.fix
