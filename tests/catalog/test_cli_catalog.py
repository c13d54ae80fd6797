"""`cargohold catalog rebuild`, run for real in a subprocess against PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cargohold
from cargohold.catalog import Catalog
from cargohold.remotes import FileRemote


def test_catalog_rebuild_after_losing_the_rows(tmp_path: Path, catalog_url: str) -> None:
    remote = FileRemote(tmp_path / "remote")
    env = {
        **os.environ,
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "CARGOHOLD_REMOTE": remote.url,
        "CARGOHOLD_CATALOG": catalog_url,
    }
    with cargohold.open(
        remote.url, data_dir=tmp_path / "data", catalog=catalog_url, signal_handlers=False
    ) as hold:
        for i in range(20):
            hold.put(f"docs/{i:02}", f"doc {i}".encode(), metadata={"n": str(i)})
        hold.flush(60)
    catalog = Catalog(catalog_url, remote)
    try:
        before = [(i.key, i.size, i.etag) for i in catalog.objects("docs/")]
        assert len(before) == 20
        catalog.drop()
        assert list(catalog.objects("docs/")) == []

        out = subprocess.run(
            [sys.executable, "-m", "cargohold", "catalog", "rebuild", "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"rows": 20}
        assert [(i.key, i.size, i.etag) for i in catalog.objects("docs/")] == before
    finally:
        catalog.close()
