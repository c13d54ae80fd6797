"""What an s3:// URL (or an argument) says wins over every AWS_* variable.

obstore builds its S3 client from the environment first (``AmazonS3Builder::from_env``),
and some variables beat its config keys: measured before the fix, ``AWS_ENDPOINT_URL_S3``
sent the writes of ``s3://...?endpoint=A`` to the variable's server, and
``AWS_VIRTUAL_HOSTED_STYLE_REQUEST``, ``AWS_SKIP_SIGNATURE`` and ``AWS_SESSION_TOKEN``
changed how requests to the URL's endpoint were addressed and signed. Each test sets one
misleading variable with monkeypatch, writes through cargohold, and checks with a separate
boto3 client that the object is on the server the URL names (and, for the endpoint, not on
the decoy server the variable names, which has the same bucket so that a misdirected write
would succeed there unnoticed).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

import cargohold
from cargohold import ConfigError, Settings
from cargohold.remotes import open_remote
from testsupport.faultproxy import FaultProxy
from testsupport.servers import MotoServer, SeaweedFS

ADMIN = ("ADMINKEY", "ADMINSECRET")
READER = ("READERKEY", "READERSECRET")
AUTH_CONFIG = {
    "identities": [
        {
            "name": "admin",
            "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        },
        {
            "name": "reader",
            "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
            "actions": ["Read", "List"],
        },
    ]
}
BUCKET = "explicit-bucket"
FAST_FAIL = Settings.load({}, connect_timeout=1, retry_timeout=2, max_retries=1)

#: Every AWS_* variable a test here may set, cleared first so the machine's own
#: environment cannot make a test pass or fail.
AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_TOKEN",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
    "AWS_SKIP_SIGNATURE",
    "AWS_ALLOW_HTTP",
)


@pytest.fixture(scope="module")
def auth_server() -> Iterator[SeaweedFS]:
    """A SeaweedFS of this module's that checks keys: an admin key and a read-only key."""
    server = SeaweedFS(s3_config=AUTH_CONFIG)
    server.access_key, server.secret_key = ADMIN
    server.start()
    try:
        server.make_bucket(BUCKET)
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def decoy(moto: MotoServer) -> MotoServer:
    """moto, with the same bucket: where a write the variables misdirect would land."""
    moto.client().create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
    return moto


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _client(endpoint: str, keys: tuple[str, str] = ADMIN) -> Any:
    """A boto3 client of its own: the independent check of what a server holds."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def _read(endpoint: str, key: str) -> bytes | None:
    try:
        body = _client(endpoint).get_object(Bucket=BUCKET, Key=key)["Body"]
    except _client(endpoint).exceptions.NoSuchKey:
        return None
    return bytes(body.read())


def _url(endpoint: str, prefix: str, query: str = "") -> str:
    keys = f"&access_key_id={ADMIN[0]}&secret_access_key={ADMIN[1]}"
    return f"s3://{BUCKET}/{prefix}?endpoint={endpoint}{keys}{query}"


def _write_through(url: str) -> tuple[str, bytes]:
    """Put one object through the remote the URL names; return its full key and bytes."""
    prefix_key = f"k-{uuid.uuid4().hex[:10]}"
    data = uuid.uuid4().bytes
    with open_remote(url, settings=FAST_FAIL) as remote:
        remote.put(prefix_key, data)
    return prefix_key, data


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"])
def test_the_urls_endpoint_beats_the_endpoint_variables(
    variable: str, auth_server: SeaweedFS, decoy: MotoServer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv(variable, decoy.endpoint)
    prefix = f"p-{uuid.uuid4().hex[:8]}"
    key, data = _write_through(_url(auth_server.endpoint, prefix))
    assert _read(auth_server.endpoint, f"{prefix}/{key}") == data
    assert _read(decoy.endpoint, f"{prefix}/{key}") is None


def test_a_hold_syncs_to_the_urls_endpoint_not_the_variables(
    auth_server: SeaweedFS,
    decoy: MotoServer,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    # The whole path a user takes: cargohold.open() with the URL, put, flush.
    for variable in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        clean_env.setenv(variable, decoy.endpoint)
    clean_env.setenv("AWS_ACCESS_KEY_ID", READER[0])  # keys of the URL win over these too
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
    prefix = f"hold-{uuid.uuid4().hex[:8]}"
    hold = cargohold.open(
        _url(auth_server.endpoint, prefix), data_dir=tmp_path, signal_handlers=False
    )
    try:
        hold.put("synced.txt", b"to the URL's server")
        hold.flush(timeout=30)
    finally:
        hold.close()
    assert _read(auth_server.endpoint, f"{prefix}/synced.txt") == b"to the URL's server"
    assert _read(decoy.endpoint, f"{prefix}/synced.txt") is None


def test_the_urls_keys_beat_the_key_variables(
    auth_server: SeaweedFS, clean_env: pytest.MonkeyPatch
) -> None:
    # The variables hold a read-only key: used for the write, it would be refused.
    clean_env.setenv("AWS_ACCESS_KEY_ID", READER[0])
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
    prefix = f"p-{uuid.uuid4().hex[:8]}"
    key, data = _write_through(_url(auth_server.endpoint, prefix))
    assert _read(auth_server.endpoint, f"{prefix}/{key}") == data


@pytest.mark.parametrize("variable", ["AWS_SESSION_TOKEN", "AWS_TOKEN"])
def test_a_token_variable_is_not_added_to_the_urls_keys(
    variable: str, auth_server: SeaweedFS, clean_env: pytest.MonkeyPatch
) -> None:
    # SeaweedFS takes a request with a session token for temporary credentials, and
    # refuses this one: before the fix obstore added it to the URL's keys.
    clean_env.setenv(variable, "a-token-that-belongs-to-other-keys")
    prefix = f"p-{uuid.uuid4().hex[:8]}"
    key, data = _write_through(_url(auth_server.endpoint, prefix))
    assert _read(auth_server.endpoint, f"{prefix}/{key}") == data


def test_the_urls_signed_requests_beat_aws_skip_signature(
    auth_server: SeaweedFS, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("AWS_SKIP_SIGNATURE", "true")  # unsigned, the write would be refused
    prefix = f"p-{uuid.uuid4().hex[:8]}"
    key, data = _write_through(_url(auth_server.endpoint, prefix))
    assert _read(auth_server.endpoint, f"{prefix}/{key}") == data


def test_path_style_beats_aws_virtual_hosted_style_request(
    auth_server: SeaweedFS, clean_env: pytest.MonkeyPatch
) -> None:
    # Virtual-hosted, the request would go to explicit-bucket.127.0.0.1, which no
    # resolver knows. The URL's endpoint means path style unless it says otherwise.
    clean_env.setenv("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true")
    for query in ("", "&path_style=true"):
        prefix = f"p-{uuid.uuid4().hex[:8]}"
        key, data = _write_through(_url(auth_server.endpoint, prefix, query))
        assert _read(auth_server.endpoint, f"{prefix}/{key}") == data


def test_allow_http_for_loopback_beats_aws_allow_http(
    auth_server: SeaweedFS, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("AWS_ALLOW_HTTP", "false")
    prefix = f"p-{uuid.uuid4().hex[:8]}"
    key, data = _write_through(_url(auth_server.endpoint, prefix))
    assert _read(auth_server.endpoint, f"{prefix}/{key}") == data


def test_the_urls_region_beats_the_region_variables(
    auth_server: SeaweedFS, clean_env: pytest.MonkeyPatch
) -> None:
    # Neither SeaweedFS nor moto checks the region of a signature, so a proxy in front of
    # the real server records the credential scope each request was signed for.
    clean_env.setenv("AWS_REGION", "us-decoy-1")
    clean_env.setenv("AWS_DEFAULT_REGION", "us-decoy-2")
    with FaultProxy(auth_server.endpoint) as proxy:
        prefix = f"p-{uuid.uuid4().hex[:8]}"
        key, data = _write_through(_url(proxy.endpoint, prefix, "&region=eu-explicit-1"))
        scopes = {h["authorization"].split("/")[2] for h in proxy.request_headers}
    assert scopes == {"eu-explicit-1"}
    assert _read(auth_server.endpoint, f"{prefix}/{key}") == data


def test_anonymous_beats_the_key_variables(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("AWS_ACCESS_KEY_ID", READER[0])
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
    prefix = f"anon-{uuid.uuid4().hex[:8]}"
    with FaultProxy(seaweedfs.endpoint) as proxy:
        url = f"s3://{seaweedfs_bucket}/{prefix}?endpoint={proxy.endpoint}&anonymous=true"
        with open_remote(url, settings=FAST_FAIL) as remote:
            remote.put("k", b"unsigned")
        assert proxy.request_headers
        assert all("authorization" not in h for h in proxy.request_headers)
    got = seaweedfs.client().get_object(Bucket=seaweedfs_bucket, Key=f"{prefix}/k")  # type: ignore[attr-defined]
    assert got["Body"].read() == b"unsigned"


def test_keys_given_in_part_are_refused_not_completed_from_variables(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("AWS_ACCESS_KEY_ID", READER[0])
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", READER[1])
    base = "s3://bucket/p?endpoint=http://127.0.0.1:9"
    for query, given in (
        ("&access_key_id=AK", "access_key_id without secret_access_key"),
        ("&secret_access_key=SK", "secret_access_key without access_key_id"),
        ("&session_token=T", "session_token without access_key_id"),
    ):
        with pytest.raises(ConfigError, match=given) as err:
            open_remote(base + query)
        assert "together" in str(err.value)


def test_an_hf_bucket_urls_endpoint_beats_the_variables(
    auth_server: SeaweedFS, decoy: MotoServer, clean_env: pytest.MonkeyPatch
) -> None:
    # hf-s3:// is the S3 remote on the Hub's gateway: the URL's endpoint beats both
    # CARGOHOLD_HF_BUCKET_ENDPOINT and the AWS_* endpoint variables.
    clean_env.setenv("CARGOHOLD_HF_BUCKET_ENDPOINT", decoy.endpoint)
    clean_env.setenv("AWS_ENDPOINT_URL_S3", decoy.endpoint)
    prefix = f"hfb-{uuid.uuid4().hex[:8]}"
    keys = f"&access_key_id={ADMIN[0]}&secret_access_key={ADMIN[1]}"
    url = f"hf-s3://tester/{BUCKET}/{prefix}?endpoint={auth_server.endpoint}{keys}"
    with open_remote(url) as remote:
        remote.put("k", b"to the gateway the URL names")
    assert _read(auth_server.endpoint, f"{prefix}/k") == b"to the gateway the URL names"
    assert _read(decoy.endpoint, f"{prefix}/k") is None
