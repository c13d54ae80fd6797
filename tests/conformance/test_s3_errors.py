"""The S3 remote's errors: each SDK failure becomes one clear error from cargohold's tree."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from cargohold import (
    ConfigError,
    PermissionDenied,
    RemoteUnavailable,
    Settings,
    TimedOut,
)
from cargohold.remotes import open_remote
from cargohold.remotes.s3 import S3Remote, _Obstore
from testsupport.faultproxy import Fault, FaultProxy
from testsupport.servers import MotoServer, S3Server, SeaweedFS, free_port

AUTH_CONFIG = {
    "identities": [
        {
            "name": "admin",
            "credentials": [{"accessKey": "ADMINKEY", "secretKey": "ADMINSECRET"}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        },
        {
            "name": "reader",
            "credentials": [{"accessKey": "READERKEY", "secretKey": "READERSECRET"}],
            "actions": ["Read", "List"],
        },
    ]
}

FAST_FAIL = Settings.load({}, connect_timeout=1, retry_timeout=3, max_retries=2)


@dataclass(frozen=True)
class AuthServer:
    """An S3 server that checks credentials: an admin key and a read-only key."""

    endpoint: str
    admin: tuple[str, str]
    reader: tuple[str, str]


@pytest.fixture(scope="module")
def seaweedfs_auth() -> Iterator[AuthServer]:
    server = SeaweedFS(s3_config=AUTH_CONFIG)
    server.access_key, server.secret_key = "ADMINKEY", "ADMINSECRET"
    server.start()
    try:
        server.make_bucket("auth-bucket")
        yield AuthServer(
            server.endpoint, ("ADMINKEY", "ADMINSECRET"), ("READERKEY", "READERSECRET")
        )
    finally:
        server.cleanup()


#: The actions moto lets through before it authenticates: the set-up below, exactly.
_MOTO_SETUP_ACTIONS = 7


@pytest.fixture(scope="module")
def moto_auth() -> Iterator[AuthServer]:
    """A moto server of its own with IAM authentication on (moto's INITIAL_NO_AUTH_ACTION_COUNT,
    set through its /moto-api/reset-auth): an admin user and a read-only user."""
    import boto3
    import httpx

    server = MotoServer().start()
    try:

        def client(kind: str) -> Any:
            return boto3.client(
                kind,
                endpoint_url=server.endpoint,
                aws_access_key_id="setup",
                aws_secret_access_key="setup",
                region_name="us-east-1",
            )

        httpx.post(f"{server.endpoint}/moto-api/reset-auth", content=str(_MOTO_SETUP_ACTIONS))
        iam = client("iam")
        keys = {}
        for user, actions in (("admin", ["s3:*"]), ("reader", ["s3:GetObject", "s3:ListBucket"])):
            iam.create_user(UserName=user)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        client("s3").create_bucket(Bucket="auth-bucket")  # the seventh: then auth is on
        yield AuthServer(server.endpoint, keys["admin"], keys["reader"])
    finally:
        server.cleanup()


@pytest.fixture(params=["obstore", "botocore"])
def sdk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which SDK the S3 remote talks through: obstore, or botocore as in a child forked
    after obstore ran (the flag that fork sets, set here; test_s3_fork.py forks for real)."""
    if request.param == "botocore":
        monkeypatch.setattr(_Obstore, "inherited", True)
    return str(request.param)


@pytest.fixture(params=["seaweedfs_auth", "moto_auth"])
def auth(request: pytest.FixtureRequest) -> AuthServer:
    return request.getfixturevalue(request.param)


def _remote(endpoint: str, key: str, secret: str, bucket: str = "auth-bucket") -> S3Remote:
    return S3Remote(
        bucket,
        f"t-{uuid.uuid4().hex[:8]}",
        endpoint=endpoint,
        access_key_id=key,
        secret_access_key=secret,
        settings=FAST_FAIL,
        environ={},
    )


@pytest.mark.usefixtures("sdk")
def test_accepted_credentials_work(auth: AuthServer) -> None:
    remote = _remote(auth.endpoint, *auth.admin)
    remote.put("k", b"v")
    assert remote.get("k") == b"v"


@pytest.mark.usefixtures("sdk")
def test_unknown_access_key_is_named(auth: AuthServer) -> None:
    remote = _remote(auth.endpoint, "NOSUCHKEY", "whatever")
    with pytest.raises(PermissionDenied, match="access key id 'NOSUCHKEY' was refused") as err:
        remote.put("k", b"v")
    assert "AWS_ACCESS_KEY_ID" in str(err.value)
    assert isinstance(err.value, PermissionError)


@pytest.mark.usefixtures("sdk")
def test_wrong_secret_is_named(auth: AuthServer) -> None:
    key = auth.admin[0]
    remote = _remote(auth.endpoint, key, "WRONGSECRET")
    with pytest.raises(PermissionDenied, match=f"secret access key for '{key}'") as err:
        remote.get("k")
    assert "AWS_SECRET_ACCESS_KEY" in str(err.value)
    assert "WRONGSECRET" not in str(err.value), "a secret must never appear in an error"


@pytest.mark.usefixtures("sdk")
def test_read_only_key_cannot_write(auth: AuthServer) -> None:
    admin = _remote(auth.endpoint, *auth.admin)
    admin.put("shared", b"v")
    key, secret = auth.reader
    reader = S3Remote(
        "auth-bucket",
        admin.prefix,
        endpoint=auth.endpoint,
        access_key_id=key,
        secret_access_key=secret,
        settings=FAST_FAIL,
        environ={},
    )
    assert reader.get("shared") == b"v"
    with pytest.raises(PermissionDenied, match=f"'{key}' may not write"):
        reader.put("shared", b"changed")
    assert admin.get("shared") == b"v"


@pytest.mark.usefixtures("sdk")
def test_unreachable_endpoint_is_remote_unavailable() -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    remote = _remote(closed, "K", "S", bucket="any-bucket")
    with pytest.raises(RemoteUnavailable) as err:
        remote.get("k")
    assert isinstance(err.value, ConnectionError)
    assert "reachable" in str(err.value)
    with pytest.raises(RemoteUnavailable):
        remote.put("k", b"v")


@pytest.mark.timeout(60)
@pytest.mark.usefixtures("sdk")
def test_an_endpoint_that_never_answers_fails_within_the_timeouts() -> None:
    """A server that accepts connections and then says nothing (a hung gateway): the
    request timeout and the retry budget bound the wait, in seconds, and the error is
    one a caller already catches. A real socket, not a mock: it just never replies."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # kept open, never answered
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    settings = Settings.load(
        {}, connect_timeout=1, request_timeout=1, retry_timeout=2, max_retries=1
    )
    remote = S3Remote(
        "any-bucket",
        endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}",
        access_key_id="K",
        secret_access_key="S",
        settings=settings,
        environ={},
    )
    try:
        # The server never answers, so only the timeouts can end this call: raising at all
        # is the bound (the timeout mark fails the test if it hangs instead).
        with pytest.raises((RemoteUnavailable, TimedOut)) as err:
            remote.get("k")
        assert isinstance(err.value, ConnectionError | TimeoutError)
        assert held, "the requests reached the silent server"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@pytest.mark.usefixtures("sdk")
def test_missing_bucket_says_to_create_it(seaweedfs: SeaweedFS, moto: SeaweedFS) -> None:
    for server in (seaweedfs, moto):
        remote = _remote(server.endpoint, "K", "S", bucket="no-such-bucket-here")
        with pytest.raises(ConfigError, match="does not exist") as err:
            remote.get("k")
        assert "create the bucket" in str(err.value)
        with pytest.raises(ConfigError, match="does not exist"):
            list(remote.list())
    # AWS and moto answer a put with NoSuchBucket; SeaweedFS says AccessDenied, so the
    # permission error mentions the bucket too.
    with pytest.raises(ConfigError, match="does not exist"):
        _remote(moto.endpoint, "K", "S", bucket="no-such-bucket-here").put("k", b"v")
    with pytest.raises(PermissionDenied, match="no-such-bucket-here"):
        _remote(seaweedfs.endpoint, "K", "S", bucket="no-such-bucket-here").put("k", b"v")


def _server(request: pytest.FixtureRequest, name: str) -> tuple[S3Server, str]:
    """The shared SeaweedFS or moto server, and its test bucket."""
    return request.getfixturevalue(name), request.getfixturevalue(f"{name}_bucket")


@pytest.mark.parametrize("server", ["seaweedfs", "moto"])
@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.usefixtures("sdk")
def test_throttled_requests_are_retried(
    request: pytest.FixtureRequest, server: str, status: int
) -> None:
    s3, bucket = _server(request, server)
    with FaultProxy(s3.endpoint) as proxy:
        remote = _remote(proxy.endpoint, "K", "S", bucket=bucket)
        proxy.add(Fault(status=status, times=2, match=lambda method, path: method == "PUT"))
        remote.put("throttled", b"eventually")
        puts = [r for r in proxy.requests if r[0] == "PUT"]
        assert [r[2] for r in puts] == [status, status, 200]
        proxy.add(Fault(status=status, times=2, match=lambda method, path: method == "GET"))
        assert remote.get("throttled") == b"eventually"


@pytest.mark.parametrize("server", ["seaweedfs", "moto"])
@pytest.mark.usefixtures("sdk")
def test_endless_throttling_ends_in_remote_unavailable(
    request: pytest.FixtureRequest, server: str
) -> None:
    s3, bucket = _server(request, server)
    with FaultProxy(s3.endpoint) as proxy:
        remote = _remote(proxy.endpoint, "K", "S", bucket=bucket)
        proxy.add(Fault(status=503, times=10_000))
        with pytest.raises(RemoteUnavailable, match="after retries"):
            remote.put("never", b"x")
        assert 2 <= len(proxy.requests) <= 1 + FAST_FAIL.max_retries


# -- URLs and configuration -----------------------------------------------------------


KEYS = "&access_key_id=AK&secret_access_key=SK"


def test_plain_http_is_refused_for_hosts_that_are_not_loopback() -> None:
    with pytest.raises(ConfigError, match="unencrypted") as err:
        open_remote("s3://bucket/p?endpoint=http://storage.example.com:9000" + KEYS)
    assert "allow_http=true" in str(err.value)
    remote = open_remote(
        "s3://bucket/p?endpoint=http://storage.example.com:9000&allow_http=true" + KEYS
    )
    assert isinstance(remote, S3Remote)
    for loopback in ("127.0.0.1:8333", "localhost:8333", "[::1]:8333", "127.5.6.7:1"):
        assert isinstance(open_remote(f"s3://bucket?endpoint=http://{loopback}" + KEYS), S3Remote)


def test_missing_credentials_for_a_custom_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="AWS_ACCESS_KEY_ID is not set") as err:
        open_remote("s3://bucket/p?endpoint=http://127.0.0.1:1")
    assert "anonymous=true" in str(err.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AK")
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY is not set"):
        open_remote("s3://bucket/p?endpoint=http://127.0.0.1:1")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    assert isinstance(
        open_remote("s3://bucket/p?endpoint=http://127.0.0.1:1&anonymous=true"), S3Remote
    )


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("s3:///prefix", "names no bucket"),
        ("s3://ab/p?anonymous=true", "too short"),
        ("s3://bucket/p?colour=blue", "unknown S3 URL parameter 'colour'"),
        ("s3://bucket/p?path_style=maybe", "not a boolean"),
        ("s3://bucket/p?endpoint=ftp://host&anonymous=true", "not an http"),
    ],
)
def test_bad_s3_urls_say_what_to_fix(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        open_remote(url)


def test_secrets_never_appear_in_the_remote_url() -> None:
    remote = open_remote(
        "s3://bucket/p?endpoint=http://127.0.0.1:1&access_key_id=AK&secret_access_key=SUPERSECRET"
    )
    assert "SUPERSECRET" not in remote.url
    assert "SUPERSECRET" not in repr(remote)


def test_endpoint_and_credentials_from_aws_variables(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str
) -> None:
    remote = S3Remote(
        seaweedfs_bucket,
        "from-env",
        environ={
            "AWS_ENDPOINT_URL": seaweedfs.endpoint,
            "AWS_ACCESS_KEY_ID": "K",
            "AWS_SECRET_ACCESS_KEY": "S",
        },
    )
    assert remote.endpoint == seaweedfs.endpoint
    remote.put("x", b"y")
    assert remote.get("x") == b"y"


@pytest.mark.usefixtures("sdk")
def test_ca_bundle_variables_do_not_break_plain_http(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    # This machine (and many CI images) sets these; a loopback http endpoint must not care.
    for name in ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(name, "/etc/ssl/certs/ca-certificates.crt")
    remote = _remote(seaweedfs.endpoint, "K", "S", bucket=seaweedfs_bucket)
    remote.put("ca", b"ok")
    assert remote.get("ca") == b"ok"


def test_missing_extra_says_what_to_install() -> None:
    # A child interpreter where obstore cannot be imported, as without the s3 extra.
    code = (
        "import sys; sys.modules['obstore'] = None\n"
        "from cargohold.remotes import open_remote\n"
        "try:\n"
        "    open_remote('s3://bucket/p')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ConfigError")
    assert "pip install 'cargohold[s3]'" in out.stdout


def test_large_puts_and_gets_keep_memory_bounded(
    seaweedfs: SeaweedFS, seaweedfs_bucket: str, tmp_path: object
) -> None:
    """A 256 MiB object goes up and comes down in a child whose peak RSS stays far below it."""
    code = f"""
import hashlib, os, resource, sys
from cargohold.remotes.s3 import S3Remote, _Obstore
remote = S3Remote({seaweedfs_bucket!r}, "big", endpoint={seaweedfs.endpoint!r},
                  access_key_id="K", secret_access_key="S", environ={{}})
size = 256 * 1024 * 1024
path = {str(tmp_path)!r} + "/big.bin"
with open(path, "wb") as out:
    block = os.urandom(1024 * 1024)
    for _ in range(size // len(block)):
        out.write(block)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open(path, "rb") as fh:
    remote.put("big.bin", fh)
digest = hashlib.sha256()
with remote.stream("big.bin") as stream:
    for chunk in stream:
        digest.update(chunk)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, remote.head("big.bin").size)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before_kib, after_kib, size = (int(v) for v in out.stdout.split())
    assert size == 256 * 1024 * 1024
    growth_mib = (after_kib - before_kib) / 1024
    assert growth_mib < 128, f"peak memory grew {growth_mib:.0f} MiB for a 256 MiB object"


def test_auth_config_is_valid_json() -> None:
    assert json.loads(json.dumps(AUTH_CONFIG))["identities"][1]["name"] == "reader"
