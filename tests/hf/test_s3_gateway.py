"""hf-s3:// on the Hub's S3 gateway, as its stand-in (testsupport/s3gateway.py) enforces
what the Hub documents: the stand-in's own rules first, then the remote on it.

The conformance suite runs on the stand-in too (tests/conformance, the ``hf-bucket-*``
remotes); these cases cover what only the gateway does.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import cargohold
from cargohold import ConfigError, InvalidKey, NotFoundError
from cargohold.keys import internal_prefix
from cargohold.remotes import Put, open_remote
from cargohold.remotes.hf_gateway import HfGatewayRemote, record_key
from cargohold.remotes.s3 import S3Remote, _Obstore
from tests.conftest import GATEWAY_NAMESPACE, gateway_url, start_gateway
from testsupport.s3gateway import S3Gateway
from testsupport.servers import SeaweedFS


def _boto(gateway: S3Gateway, server: SeaweedFS, namespace: str = GATEWAY_NAMESPACE) -> Any:
    """A boto3 client set up as the Hub's docs say (its user agent says botocore)."""
    return boto3.client(
        "s3",
        endpoint_url=gateway.namespace_endpoint(namespace),
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": 1},
        ),
    )


def _code(error: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = error.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def _raw(
    endpoint: str, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    host, port = endpoint.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture
def prefix() -> str:
    return f"gw-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bucket_url(
    hub_gateway: S3Gateway, seaweedfs: SeaweedFS, seaweedfs_bucket: str, prefix: str
) -> str:
    """An hf-s3:// URL for ``prefix`` through the test's gateway stand-in."""
    return gateway_url(hub_gateway, seaweedfs, seaweedfs_bucket, prefix)


# -- the stand-in -----------------------------------------------------------------------


def test_obstore_follows_the_redirect_and_leaves_authorization_behind(
    hub_gateway: S3Gateway, seaweedfs: SeaweedFS, seaweedfs_bucket: str
) -> None:
    data = bytes(range(256)) * 4096
    with open_remote(gateway_url(hub_gateway, seaweedfs, seaweedfs_bucket)) as remote:
        remote.put("v/a.bin", data)
        assert remote.get("v/a.bin") == data
        assert remote.get("v/a.bin", range=(10, 20)) == data[10:20]
        with remote.stream("v/a.bin") as stream:
            assert b"".join(stream) == data
            assert stream.info.size == len(data)
    # Every read went 302 -> CDN (obstore's user agent is none of the proxied three), and
    # the CDN never saw an Authorization header (it refuses one: the reads would fail).
    assert len(hub_gateway.redirects) >= 3
    assert len(hub_gateway.cdn_reads) >= 3
    assert hub_gateway.proxied_reads == []
    assert hub_gateway.leaks == []


def test_botocore_clients_are_served_by_the_gateway_itself(
    hub_gateway: S3Gateway,
    seaweedfs: SeaweedFS,
    seaweedfs_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    remote = open_remote(gateway_url(hub_gateway, seaweedfs, seaweedfs_bucket))
    assert isinstance(remote, S3Remote)
    remote.put("k", b"through botocore")
    monkeypatch.setattr(_Obstore, "inherited", True)  # as in a child forked after obstore ran
    assert remote._boto() is not None
    assert remote.get("k") == b"through botocore"
    assert hub_gateway.redirects == []
    assert len(hub_gateway.proxied_reads) == 1
    remote.close()


def test_the_cdn_refuses_and_records_an_authorization_header(
    hub_gateway: S3Gateway, seaweedfs: SeaweedFS, seaweedfs_bucket: str, prefix: str
) -> None:
    path = f"/{GATEWAY_NAMESPACE}/{seaweedfs_bucket}/{prefix}/k"
    auth = {"Authorization": "AWS4-HMAC-SHA256 Credential=x", "User-Agent": "curl/8"}
    status, _, _ = _raw(hub_gateway.endpoint, "PUT", path, auth, b"bytes")
    assert status == 200
    status, headers, _ = _raw(hub_gateway.endpoint, "GET", path, auth)
    assert status == 302
    location = headers["Location"].removeprefix(hub_gateway.cdn_endpoint)
    status, _, body = _raw(hub_gateway.cdn_endpoint, "GET", location, {})
    assert (status, body) == (200, b"bytes")
    status, _, _ = _raw(hub_gateway.cdn_endpoint, "GET", location, auth)
    assert status == 400
    assert hub_gateway.leaks == [f"GET {location}"]
    hub_gateway.leaks.clear()  # recorded as it must be; the teardown check is for the others
    status, _, _ = _raw(hub_gateway.cdn_endpoint, "GET", location.replace("signature=", "s="), {})
    assert status == 403


@pytest.mark.parametrize("mode", ["drop", "refuse"])
def test_metadata_headers_are_dropped_or_refused(
    request: pytest.FixtureRequest,
    seaweedfs: SeaweedFS,
    seaweedfs_bucket: str,
    prefix: str,
    mode: Literal["drop", "refuse"],
) -> None:
    gateway = start_gateway(request, mode)
    client = _boto(gateway, seaweedfs)
    key = f"{prefix}/m"
    args = {"Bucket": seaweedfs_bucket, "Key": key, "Body": b"x", "ContentType": "text/csv"}
    if mode == "refuse":
        with pytest.raises(ClientError) as refused:
            client.put_object(Metadata={"a": "b"}, **args)
        assert _code(refused) == (400, "InvalidArgument")
        with pytest.raises(ClientError):
            client.head_object(Bucket=seaweedfs_bucket, Key=key)
        assert [r.code for r in gateway.refusals] == ["InvalidArgument"]
        gateway.refusals.clear()  # provoked on purpose (see start_gateway)
    else:
        client.put_object(Metadata={"a": "b"}, **args)
        head = client.head_object(Bucket=seaweedfs_bucket, Key=key)
        assert (head["Metadata"], head["ContentType"]) == ({}, "text/csv")


def test_what_the_gateway_does_not_implement_is_refused(
    hub_gateway: S3Gateway, seaweedfs: SeaweedFS, seaweedfs_bucket: str, prefix: str
) -> None:
    client = _boto(hub_gateway, seaweedfs)
    bucket, key = seaweedfs_bucket, f"{prefix}/k"
    # Headers of unsupported features are accepted and ignored.
    client.put_object(Bucket=bucket, Key=key, Body=b"k", ACL="public-read", Tagging="a=b")
    not_implemented = [
        lambda: client.list_objects(Bucket=bucket, Prefix=prefix),
        lambda: client.get_object_tagging(Bucket=bucket, Key=key),
        lambda: client.put_object_acl(Bucket=bucket, Key=key, ACL="private"),
        lambda: client.get_bucket_versioning(Bucket=bucket),
        lambda: client.get_bucket_lifecycle_configuration(Bucket=bucket),
        lambda: client.copy_object(
            Bucket=bucket, Key=f"{prefix}/c", CopySource={"Bucket": "bobs-bucket", "Key": "x"}
        ),
    ]
    hub_gateway.own("bob", "bobs-bucket")
    for call in not_implemented:
        with pytest.raises(ClientError) as refused:
            call()
        assert _code(refused) == (501, "NotImplemented")
    upload = client.create_multipart_upload(Bucket=bucket, Key=f"{prefix}/mp")["UploadId"]
    with pytest.raises(ClientError) as refused:
        client.upload_part_copy(
            Bucket=bucket,
            Key=f"{prefix}/mp",
            UploadId=upload,
            PartNumber=1,
            CopySource={"Bucket": bucket, "Key": key},
        )
    assert _code(refused) == (501, "NotImplemented")
    client.abort_multipart_upload(Bucket=bucket, Key=f"{prefix}/mp", UploadId=upload)
    with pytest.raises(ClientError) as refused:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="|")
    assert _code(refused) == (400, "InvalidArgument")
    # What it does: ListObjectsV2 with '/', copies within the namespace.
    client.copy_object(Bucket=bucket, Key=f"{prefix}/c", CopySource={"Bucket": bucket, "Key": key})
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/", Delimiter="/")
    assert [item["Key"] for item in listed["Contents"]] == [f"{prefix}/c", f"{prefix}/k"]
    assert client.get_object(Bucket=bucket, Key=f"{prefix}/c")["Body"].read() == b"k"
    # A bucket is only found under its own namespace.
    with pytest.raises(ClientError) as refused:
        _boto(hub_gateway, seaweedfs, "bob").head_bucket(Bucket=bucket)
    assert _code(refused)[0] == 404
    assert len(hub_gateway.refusals) == 9
    hub_gateway.refusals.clear()  # provoked on purpose (see start_gateway)


def test_preconditions_hold_on_puts_and_are_ignored_on_gets(
    hub_gateway: S3Gateway, seaweedfs: SeaweedFS, seaweedfs_bucket: str, prefix: str
) -> None:
    client = _boto(hub_gateway, seaweedfs)
    bucket, key = seaweedfs_bucket, f"{prefix}/cas"
    etag = client.put_object(Bucket=bucket, Key=key, Body=b"v1", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket, Key=key, Body=b"v2", IfNoneMatch="*")
    assert _code(refused)[0] == 412
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket, Key=key, Body=b"v2", IfMatch='"0000"')
    assert _code(refused)[0] == 412
    client.put_object(Bucket=bucket, Key=key, Body=b"v2", IfMatch=etag)
    got = client.get_object(Bucket=bucket, Key=key, IfMatch=etag)  # stale etag: ignored
    assert got["Body"].read() == b"v2"


def test_bad_keys_virtual_hosts_unsigned_requests_and_checksum_trailers_are_refused(
    hub_gateway: S3Gateway, seaweedfs: SeaweedFS, seaweedfs_bucket: str, prefix: str
) -> None:
    client = _boto(hub_gateway, seaweedfs)
    for key in (f"{prefix}/a../b", f"{prefix}/end..", f"{prefix}/back\\slash"):
        with pytest.raises(ClientError) as refused:
            client.put_object(Bucket=seaweedfs_bucket, Key=key, Body=b"x")
        assert _code(refused) == (400, "InvalidArgument")
    path = f"/{GATEWAY_NAMESPACE}/{seaweedfs_bucket}/{prefix}/raw"
    signed = {"Authorization": "AWS4-HMAC-SHA256 Credential=x"}
    port = hub_gateway.endpoint.rsplit(":", 1)[1]
    virtual = {**signed, "Host": f"{seaweedfs_bucket}.127.0.0.1:{port}"}
    assert _raw(hub_gateway.endpoint, "GET", f"/{prefix}/raw", virtual)[0] == 400
    assert _raw(hub_gateway.endpoint, "PUT", path, {}, b"x")[0] == 403
    trailer = {
        **signed,
        "Content-Encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-trailer": "x-amz-checksum-crc32",
        "x-amz-decoded-content-length": "1",
    }
    body = b"1\r\nx\r\n0\r\nx-amz-checksum-crc32:jHNlIQ==\r\n\r\n"
    assert _raw(hub_gateway.endpoint, "PUT", path, trailer, body)[0] == 400
    codes = [(r.status, r.code) for r in hub_gateway.refusals]
    assert codes[-3:] == [(400, "InvalidRequest"), (403, "AccessDenied"), (400, "InvalidRequest")]
    with pytest.raises(ClientError):
        client.head_object(Bucket=seaweedfs_bucket, Key=f"{prefix}/raw")  # nothing stored
    assert len(hub_gateway.refusals) == 6
    hub_gateway.refusals.clear()  # provoked on purpose (see start_gateway)


# -- the remote on it ------------------------------------------------------------------


def test_metadata_lives_in_a_record_naming_the_etag(
    hub_gateway: S3Gateway, seaweedfs: SeaweedFS, seaweedfs_bucket: str, prefix: str
) -> None:
    url = gateway_url(hub_gateway, seaweedfs, seaweedfs_bucket, prefix)
    with open_remote(url) as remote:
        assert not remote.stores_metadata
        info = remote.put("d/a.json", b"{}", metadata={"Seed": "42"})
        assert info.metadata == {"seed": "42"}
        assert remote.head("d/a.json").metadata == {"seed": "42"}
        records = [i.key for i in remote.list(internal_prefix("metadata/"))]
        assert records == [record_key("d/a.json")]
        # The gateway keeps no user metadata: SeaweedFS behind it has none either.
        direct = seaweedfs.client().head_object(  # type: ignore[attr-defined]
            Bucket=seaweedfs_bucket, Key=f"{prefix}/d/a.json"
        )
        assert (direct["Metadata"], direct["ContentType"]) == ({}, "application/json")
        # Another tool replaces the bytes and leaves the record: it names the old etag.
        _boto(hub_gateway, seaweedfs).put_object(
            Bucket=seaweedfs_bucket, Key=f"{prefix}/d/a.json", Body=b"[]"
        )
        assert remote.head("d/a.json").metadata == {}
        [fetched] = remote.fetch_many(["d/a.json"])
        assert isinstance(fetched, tuple)
        assert fetched[0].metadata == {}
        # A put without metadata leaves no record behind; a delete takes both.
        remote.put("d/b", b"x", metadata={"k": "v"})
        remote.put("d/b", b"x")
        assert remote.head("d/b").metadata == {}
        remote.put("d/c", b"x", metadata={"k": "v"})
        remote.delete("d/c")
        with pytest.raises(NotFoundError):
            remote.head("d/c")
        assert [i.key for i in remote.list(internal_prefix("metadata/"))] == [
            record_key("d/a.json")
        ]


def test_keys_and_urls_the_gateway_cannot_take(
    hub_gateway: S3Gateway, seaweedfs: SeaweedFS, seaweedfs_bucket: str, prefix: str
) -> None:
    url = gateway_url(hub_gateway, seaweedfs, seaweedfs_bucket, prefix)
    with open_remote(url) as remote:
        before = len(hub_gateway.refusals)
        with pytest.raises(InvalidKey, match=r"'\.\.'.*gateway"):
            remote.put("a../b", b"x")
        [result] = remote.put_many([Put("end..", b"x")])
        assert isinstance(result, InvalidKey)
        remote.delete("end..")  # no such object can exist: nothing to do
        assert remote.delete_many(["end..", "fine"]) == [None, None]
        assert len(hub_gateway.refusals) == before  # refused here, never sent
    with pytest.raises(ConfigError, match="path-style"):
        open_remote(url + "&path_style=false")
    with pytest.raises(ConfigError, match="'\\.\\.'"):
        open_remote(url.replace(prefix, f"{prefix}/v1.."))
    default = open_remote("hf-s3://ana/app-data/out?access_key_id=HFAK1&secret_access_key=s")
    assert isinstance(default, HfGatewayRemote)
    assert (default.url, default.endpoint) == (
        "hf-s3://ana/app-data/out",
        "https://s3.hf.co/ana",
    )
    assert url.split("&access_key_id")[0] == open_remote(url).url


def test_the_old_name_hf_bucket_opens_the_same_remote_and_asks_for_hf_s3(
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = "hf-bucket://ana/app-data/out?access_key_id=HFAK1&secret_access_key=s"
    with caplog.at_level("WARNING", logger="cargohold.remotes"):
        remote = open_remote(old)
    assert isinstance(remote, HfGatewayRemote)
    assert remote.url == "hf-s3://ana/app-data/out"
    assert "hf-bucket:// is now hf-s3://" in caplog.text


def test_a_holds_metadata_and_content_types_survive_the_gateway(
    hub_gateway: S3Gateway, bucket_url: str, tmp_path: Any
) -> None:
    url = bucket_url
    with cargohold.open(url, data_dir=tmp_path / "one", signal_handlers=False) as hold:
        hold.put("takes/1.mp4", b"\x00video", metadata={"Prompt": "a cat — 猫"})
        hold.put("notes/n", b"text", content_type="text/markdown; charset=utf-8")
        hold.flush(60)
    # A second instance, with an empty local tier, reads it all back from the bucket.
    with cargohold.open(url, data_dir=tmp_path / "two", signal_handlers=False) as hold:
        head = hold.head("takes/1.mp4")
        assert (head.metadata, head.content_type) == ({"prompt": "a cat — 猫"}, "video/mp4")
        assert hold.get("takes/1.mp4") == b"\x00video"
        assert hold.head("takes/1.mp4").metadata == {"prompt": "a cat — 猫"}  # read through
        assert hold.head("notes/n").content_type == "text/markdown; charset=utf-8"
        assert [info.key for info in hold.list()] == ["notes/n", "takes/1.mp4"]
    assert hub_gateway.redirects  # the reads went through the CDN


def test_a_memoized_build_runs_once_across_instances_sharing_the_bucket(
    bucket_url: str, tmp_path: Any
) -> None:
    # Single-flight across instances rests on create-only and if-match puts (the lease),
    # which the gateway enforces: no catalog needed on hf-s3://.
    builds: list[str] = []
    both = threading.Barrier(2)

    def build(inputs: dict[str, Any], workdir: Any) -> Any:
        builds.append(inputs["prompt"])
        out = workdir / "take_1.mp4"
        out.write_bytes(b"video of " + inputs["prompt"].encode())
        return out

    holds = [
        cargohold.open(bucket_url, data_dir=tmp_path / f"instance-{i}", signal_handlers=False)
        for i in range(2)
    ]
    try:

        def ask(hold: cargohold.Hold) -> bytes:
            both.wait()
            entry = hold.memo("video", version="v1").get_or_create({"prompt": "a cat"}, build)
            assert entry.path is not None
            return entry.path.read_bytes()

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(ask, holds))
    finally:
        for hold in holds:
            hold.close()
    assert builds == ["a cat"]
    assert results == [b"video of a cat"] * 2
