"""What an hf:// URL (or an argument) says wins over HF_ENDPOINT and HF_TOKEN.

huggingface_hub reads HF_ENDPOINT into its constants when it is imported, so each write
here runs in a child interpreter that starts with the misleading variables already set,
as an app's process would. Two Hub stand-ins hold the same repo: the one the URL names
must get every file (small ones in the commit body, and .bin files through the Git LFS
upload path), and the decoy the variable names must get no request at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from cargohold import ConfigError
from cargohold.remotes.hf import CommitBudget, HfRemote
from tests.hf.conftest import UNLIMITED
from testsupport.hubstandin import OTHER_TOKEN, WRITE_TOKEN, HubStandIn

CHILD = """
import sys
from cargohold.remotes import open_remote
from cargohold.remotes.hf import CommitBudget, HfRemote
url, token = sys.argv[1], sys.argv[2]
if token:
    repo, _, endpoint = url.removeprefix("hf://datasets/").partition("?endpoint=")
    remote = HfRemote(repo, endpoint=endpoint, token=token)
else:
    remote = open_remote(url)
with remote:
    remote.put("notes/small.txt", b"small, in the commit")
    remote.put("weights/big.bin", b"through LFS " * 1000)
    print(remote.endpoint)
"""


@pytest.fixture
def decoy() -> Iterator[HubStandIn]:
    with HubStandIn() as server:
        yield server


def _run_child(url: str, env: dict[str, str], token: str = "") -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "CARGOHOLD_"))}
    base.update(env, CARGOHOLD_HF_COMMITS_PER_HOUR="1e9", HF_HUB_DISABLE_TELEMETRY="1")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, url, token],
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _same_repo_on_both(hub: HubStandIn, decoy: HubStandIn) -> str:
    repo = f"tester/explicit-{uuid.uuid4().hex[:8]}"
    hub.create_repo(repo)
    decoy.create_repo(repo)
    return repo


def _assert_written_to(hub: HubStandIn, decoy: HubStandIn, repo: str) -> None:
    contents = set(hub.files(repo).values())
    assert b"small, in the commit" in contents
    assert b"through LFS " * 1000 in contents
    assert [r for r in decoy.requests if repo in r[1]] == []
    assert set(decoy.files(repo)) == {".gitattributes"}  # the initial commit only


def test_the_urls_endpoint_beats_hf_endpoint(hub: HubStandIn, decoy: HubStandIn) -> None:
    repo = _same_repo_on_both(hub, decoy)
    url = f"hf://datasets/{repo}?endpoint={hub.endpoint}"
    env = {"HF_ENDPOINT": decoy.endpoint, "HF_TOKEN": WRITE_TOKEN, "HF_HUB_DISABLE_XET": "1"}
    assert _run_child(url, env) == hub.endpoint
    _assert_written_to(hub, decoy, repo)


def test_the_token_argument_beats_hf_token(hub: HubStandIn, decoy: HubStandIn) -> None:
    # OTHER_TOKEN can write, but not to tester's repos: used, the writes would be refused.
    repo = _same_repo_on_both(hub, decoy)
    url = f"hf://datasets/{repo}?endpoint={hub.endpoint}"
    env = {"HF_ENDPOINT": decoy.endpoint, "HF_TOKEN": OTHER_TOKEN, "HF_HUB_DISABLE_XET": "1"}
    assert _run_child(url, env, token=WRITE_TOKEN) == hub.endpoint
    _assert_written_to(hub, decoy, repo)


def test_token_false_beats_hf_token(hub: HubStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = f"tester/private-{uuid.uuid4().hex[:8]}"
    hub.create_repo(repo, private=True)
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    with HfRemote(repo, endpoint=hub.endpoint, settings=UNLIMITED) as owner:
        owner.put("k", b"v")
    with (
        HfRemote(repo, endpoint=hub.endpoint, token=False, settings=UNLIMITED) as anonymous,
        pytest.raises(ConfigError, match="anonymous caller"),
    ):
        anonymous.get("k")  # HF_TOKEN would have let it read


@pytest.mark.parametrize("burst", [0, 0.5, -1, float("nan"), float("inf")])
def test_a_commit_burst_under_one_is_refused(burst: float) -> None:
    with pytest.raises(ConfigError, match="commit burst must be a number >= 1"):
        CommitBudget(100, burst)


@pytest.mark.parametrize("per_hour", [0, -5, float("nan"), float("inf")])
def test_commits_per_hour_out_of_range_is_refused(per_hour: float) -> None:
    with pytest.raises(ConfigError, match="CARGOHOLD_HF_COMMITS_PER_HOUR"):
        CommitBudget(per_hour)
