"""SQLite replication on the Hugging Face remotes (the stand-in): a bucket on its native
API cannot enforce the writer's fence, so it is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

import cargohold
from cargohold.errors import ConfigError
from cargohold.keys import internal_prefix
from tests.hf.conftest import bucket_url
from testsupport.hubstandin import HubStandIn


def test_a_bucket_without_conditional_writes_is_refused_before_anything_is_written(
    hf_env: HubStandIn, tmp_path: Path
) -> None:
    url = bucket_url(hf_env, "app")
    with cargohold.open(url, data_dir=tmp_path, signal_handlers=False) as hold:
        with pytest.raises(ConfigError, match="single-writer fence") as caught:
            hold.sqlite("app.db")
        assert "hf-bucket://OWNER/NAME" in (caught.value.hint or "")
        assert not (hold.local_dir / "sqlite" / "app.db").exists()
        assert list(hold.remote.list(internal_prefix("sqlite/"))) == []
