"""Settings: argument > CARGOHOLD_* variable > default, read at build time, never at import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cargohold import ConfigError, Settings
from cargohold.config import parse_bool, parse_duration, parse_size, settings_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_precedence_argument_then_variable_then_default() -> None:
    env = {"CARGOHOLD_RETRY_TIMEOUT": "7s", "CARGOHOLD_MAX_RETRIES": "3"}
    assert Settings.load({}).retry_timeout == 20.0
    assert Settings.load(env).retry_timeout == 7.0
    assert Settings.load(env, retry_timeout=2).retry_timeout == 2.0
    assert Settings.load(env, retry_timeout="1m").retry_timeout == 60.0
    assert Settings.load(env).max_retries == 3


def test_read_when_built_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARGOHOLD_REMOTE", "memory://first")
    assert Settings.load().remote == "memory://first"
    monkeypatch.setenv("CARGOHOLD_REMOTE", "memory://second")
    assert Settings.load().remote == "memory://second"


def test_import_reads_no_settings() -> None:
    # A broken variable must not break `import cargohold`, only the object built from it.
    code = "import cargohold; print('imported')"
    env = {"CARGOHOLD_MAX_RETRIES": "many", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "imported", out.stderr


def test_bad_variable_names_the_variable_and_the_form() -> None:
    with pytest.raises(ConfigError, match="CARGOHOLD_RETRY_TIMEOUT='soon' is not valid") as err:
        Settings.load({"CARGOHOLD_RETRY_TIMEOUT": "soon"})
    assert "30s" in str(err.value)
    with pytest.raises(ConfigError, match="CARGOHOLD_LOG_LEVEL"):
        Settings.load({"CARGOHOLD_LOG_LEVEL": "loud"})


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        Settings.load({}, colour="blue")
    with pytest.raises(ConfigError, match="cannot be a list"):
        Settings.load({}, retry_timeout=[1])
    with pytest.raises(ConfigError, match="cannot be a bool"):
        Settings.load({}, max_retries=True)
    with pytest.raises(ValueError):
        Settings.load({}, retry_timeout="forever")


def test_paths_are_expanded() -> None:
    assert Settings.load({}, data_dir=Path("~/x")).data_dir == Path.home() / "x"
    assert Settings.load({"CARGOHOLD_DATA_DIR": "~/y"}).data_dir == Path.home() / "y"


def test_replace_validates() -> None:
    settings = Settings.load({})
    assert settings.replace(max_retries=1).max_retries == 1
    with pytest.raises(ConfigError):
        settings.replace(nonsense=1)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1048576", 1048576), ("512MiB", 512 * 1024**2), ("2GB", 2 * 1000**3), ("1.5 KiB", 1536)],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("text", "value"), [("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25), ("2.5", 2.5)]
)
def test_durations(text: str, value: float) -> None:
    assert parse_duration(text) == value


def test_booleans() -> None:
    assert [parse_bool(t) for t in ("Yes", "1", "on", "false", "0", "")] == [True] * 3 + [False] * 3
    with pytest.raises(ValueError, match="not a boolean"):
        parse_bool("perhaps")
    for bad in ("lots", "12 parsecs"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_readme_settings_table_matches_the_code() -> None:
    text = README.read_text()
    match = re.search(
        r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", text, re.S
    )
    assert match, "README.md lost its settings-table markers"
    assert match.group(1) == settings_table(), (
        "README's settings table is stale: paste cargohold.config.settings_table() between the markers"
    )
