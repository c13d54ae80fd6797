"""Settings: argument > CARGOHOLD_* variable > default, read at build time, never at import."""

from __future__ import annotations

import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cargohold import ConfigError, Settings
from cargohold.config import Bounds, parse_bool, parse_duration, parse_size, settings_table

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


# -- ranges: every setting that has one refuses values outside it, naming its variable --

RANGED = [f for f in dataclasses.fields(Settings) if isinstance(f.metadata["allowed"], Bounds)]


def _as_text(bounds: Bounds, value: float) -> str:
    """``value`` in the variable's own form (sizes in bytes, durations in seconds)."""
    if bounds.unit == "size" or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _bad_values(bounds: Bounds) -> list[float]:
    below = [bounds.low - 1] + ([bounds.low] if bounds.low_open else [])
    return [*below, bounds.high * 10 + 1, math.nan, math.inf, -math.inf]


def _assert_names_variable_and_range(
    err: pytest.ExceptionInfo[ConfigError], env: str, allowed: object
) -> None:
    assert env in str(err.value), str(err.value)
    assert str(allowed) in str(err.value), str(err.value)


def test_every_numeric_setting_declares_a_range() -> None:
    numeric = [
        f.name
        for f in dataclasses.fields(Settings)
        if (int in f.metadata["accepts"] or float in f.metadata["accepts"])
        and not isinstance(f.default, bool)
    ]
    assert numeric == [f.name for f in RANGED]
    assert {"sync_batch", "sync_concurrency", "max_retries", "drain_fraction"} <= set(numeric)


@pytest.mark.parametrize("f", RANGED, ids=lambda f: f.metadata["env"])
def test_defaults_and_ends_of_each_range_are_accepted(f: dataclasses.Field[Any]) -> None:
    bounds: Bounds = f.metadata["allowed"]
    default = getattr(Settings.load({}), f.name)
    assert default is None or bounds.allows(default)
    ends = [bounds.high] if bounds.low_open else [bounds.low, bounds.high]
    for value in ends:
        from_env = Settings.load({f.metadata["env"]: _as_text(bounds, value)})
        assert getattr(from_env, f.name) == value
        assert getattr(Settings.load({}, **{f.name: value}), f.name) == value


@pytest.mark.parametrize("f", RANGED, ids=lambda f: f.metadata["env"])
def test_values_out_of_range_are_refused_naming_the_variable(f: dataclasses.Field[Any]) -> None:
    env, bounds = f.metadata["env"], f.metadata["allowed"]
    for value in _bad_values(bounds):
        text = _as_text(bounds, value) if math.isfinite(value) else str(value)
        with pytest.raises(ConfigError) as err:
            Settings.load({env: text})
        _assert_names_variable_and_range(err, env, bounds)
        argument: float = (
            value if float in f.metadata["accepts"] or not math.isfinite(value) else int(value)
        )
        with pytest.raises(ConfigError) as err:
            Settings.load({}, **{f.name: argument})
        _assert_names_variable_and_range(err, env, bounds)
        with pytest.raises(ConfigError) as err:
            Settings.load({}).replace(**{f.name: argument})
        _assert_names_variable_and_range(err, env, bounds)


@pytest.mark.parametrize("f", RANGED, ids=lambda f: f.metadata["env"])
def test_values_of_the_wrong_type_are_refused_naming_the_variable(
    f: dataclasses.Field[Any],
) -> None:
    env, bounds = f.metadata["env"], f.metadata["allowed"]
    for text in ("abc", "12 parsecs", "1,5", ""):
        if text == "" and f.default is None:
            continue  # an empty variable means unset for settings that may be unset
        with pytest.raises(ConfigError) as err:
            Settings.load({env: text})
        _assert_names_variable_and_range(err, env, bounds)
    for value in ([1], "abc", True, b"1"):
        with pytest.raises(ConfigError) as err:
            Settings.load({}, **{f.name: value})
        _assert_names_variable_and_range(err, env, bounds)


def test_whole_number_settings_refuse_fractions() -> None:
    for name, env in (
        ("sync_batch", "CARGOHOLD_SYNC_BATCH"),
        ("max_retries", "CARGOHOLD_MAX_RETRIES"),
    ):
        with pytest.raises(ConfigError, match=f"{env}='1.5' is not valid"):
            Settings.load({env: "1.5"})
        with pytest.raises(ConfigError, match="cannot be a float") as err:
            Settings.load({}, **{name: 2.0})
        assert env in str(err.value)


@pytest.mark.parametrize(
    ("env", "value", "allowed"),
    [
        ("CARGOHOLD_SYNC_BATCH", "0", "1 <= x <= 100000"),
        ("CARGOHOLD_SYNC_CONCURRENCY", "0", "1 <= x <= 1024"),
        ("CARGOHOLD_MAX_RETRIES", "-1", "0 <= x <= 100"),
        ("CARGOHOLD_SYNC_BATCH", "abc", "1 <= x <= 100000"),
        ("CARGOHOLD_DRAIN_FRACTION", "0", "0 < x <= 1, or `off`"),
        ("CARGOHOLD_SHUTDOWN_GRACE", "-1", "0 <= x <= 1d"),
    ],
)
def test_open_refuses_a_bad_variable_before_touching_anything(
    env: str, value: str, allowed: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import cargohold

    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        cargohold.open("memory://bad-settings", data_dir=tmp_path / "data", signal_handlers=False)
    assert f"{env}={value!r}" in str(err.value)
    assert allowed in str(err.value)
    assert not (tmp_path / "data").exists()


def test_open_refuses_a_bad_argument(tmp_path: Path) -> None:
    import cargohold

    with pytest.raises(ConfigError, match="CARGOHOLD_SYNC_CONCURRENCY allows 1 <= x <= 1024"):
        cargohold.open("memory://bad-arg", data_dir=tmp_path, sync_concurrency=0)


def test_shutdown_grace_of_zero_is_legal() -> None:
    # 0 is Railway's default grace: no time to flush, which the Hold reports at open.
    assert Settings.load({"CARGOHOLD_SHUTDOWN_GRACE": "0"}).shutdown_grace == 0.0
    assert Settings.load({}, shutdown_grace=0).shutdown_grace == 0.0


def test_drain_fraction_parses_a_fraction_or_off() -> None:
    env = "CARGOHOLD_DRAIN_FRACTION"
    assert Settings.load({}).drain_fraction == 0.5
    assert Settings.load({env: "0.25"}).drain_fraction == 0.25
    assert Settings.load({env: "1"}).drain_fraction == 1.0
    assert Settings.load({env: "off"}).drain_fraction is None
    assert Settings.load({env: " OFF "}).drain_fraction is None
    assert Settings.load({}, drain_fraction="off").drain_fraction is None
    # None in Python turns it off too: for this setting an explicit None is not "unset".
    assert Settings.load({env: "0.25"}, drain_fraction=None).drain_fraction is None
    assert Settings.load({env: "off"}, drain_fraction=0.75).drain_fraction == 0.75
    assert Settings.load({}, drain_fraction=1).drain_fraction == 1.0
    assert Settings.load({}).replace(drain_fraction=None).drain_fraction is None
    for bad in ("0", "1.01", "-0.5", "nan", "", "half"):
        with pytest.raises(ConfigError, match=env) as err:
            Settings.load({env: bad})
        assert "0 < x <= 1, or `off`" in str(err.value)


def test_none_cannot_unset_a_setting_that_has_no_unset() -> None:
    # For load() None means "not given" (so the variable or the default applies) ...
    assert Settings.load({"CARGOHOLD_SYNC_BATCH": "9"}, sync_batch=None).sync_batch == 9
    # ... while replace() would store it: refused, naming the variable.
    with pytest.raises(ConfigError, match="sync_batch cannot be None") as err:
        Settings.load({}).replace(sync_batch=None)
    assert "CARGOHOLD_SYNC_BATCH allows 1 <= x <= 100000" in str(err.value)
    assert Settings.load({}).replace(shutdown_grace=None).shutdown_grace is None


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("CARGOHOLD_BACKPRESSURE", "sometimes"),
        ("CARGOHOLD_LOG_LEVEL", "loud"),
        ("CARGOHOLD_HF_BUCKET_ENDPOINT", "s3.hf.co/{namespace}"),
        ("CARGOHOLD_HF_BUCKET_ENDPOINT", "ftp://s3.hf.co"),
        ("CARGOHOLD_FSYNC", "perhaps"),
        ("CARGOHOLD_SIGNAL_HANDLERS", "2"),
    ],
)
def test_text_settings_refuse_values_outside_their_choices(env: str, value: str) -> None:
    f = next(f for f in dataclasses.fields(Settings) if f.metadata["env"] == env)
    with pytest.raises(ConfigError) as err:
        Settings.load({env: value})
    assert f"{env}={value!r} is not valid" in str(err.value)
    if f.metadata["allowed"]:
        assert f"{env} allows {f.metadata['allowed']}" in str(err.value)
    with pytest.raises(ConfigError) as err:
        Settings.load({}, **{f.name: value})
    assert env in str(err.value)


def test_paths_refuse_other_types_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="cannot be an int") as err:
        Settings.load({}, data_dir=3)
    assert "CARGOHOLD_DATA_DIR" in str(err.value)


def test_durations_take_days() -> None:
    assert parse_duration("7d") == 7 * 86400
    assert Settings.load({"CARGOHOLD_DEBUG_RETENTION": "30d"}).debug_retention == 30 * 86400


# -- the HTTP service's tokens and public prefixes --


def test_tokens_must_be_token68_and_are_never_repeated_in_errors() -> None:
    assert Settings.load({"CARGOHOLD_TOKEN": "Ab9-._~+/=="}).token == "Ab9-._~+/=="
    assert Settings.load({"CARGOHOLD_READ_TOKEN": " r34d "}).read_token == "r34d"
    assert Settings.load({"CARGOHOLD_TOKEN": ""}).token is None
    for env, name in (("CARGOHOLD_TOKEN", "token"), ("CARGOHOLD_READ_TOKEN", "read_token")):
        for bad in ("two words", "semi;colon", "=x", "tab\there", "é"):
            with pytest.raises(ConfigError, match=f"{env}=<hidden> is not valid") as err:
                Settings.load({env: bad})
            assert bad not in str(err.value)
            assert "RFC 6750" in str(err.value)
            with pytest.raises(ConfigError) as err:
                Settings.load({}, **{name: bad})
            assert bad not in str(err.value)


def test_the_read_token_must_differ_from_the_write_token() -> None:
    with pytest.raises(ConfigError, match="CARGOHOLD_READ_TOKEN is the same as CARGOHOLD_TOKEN"):
        Settings.load({"CARGOHOLD_TOKEN": "same", "CARGOHOLD_READ_TOKEN": "same"})
    with pytest.raises(ConfigError, match="same as CARGOHOLD_TOKEN"):
        Settings.load({}, token="a").replace(read_token="a")
    both = Settings.load({}, token="w", read_token="r")
    assert (both.token, both.read_token) == ("w", "r")


def test_public_prefixes_from_the_variable_or_an_argument() -> None:
    env = "CARGOHOLD_PUBLIC_PREFIXES"
    assert Settings.load({}).public_prefixes == ()
    loaded = Settings.load({env: " public/, thumbs/,, memo/blobs/ ,public/"})
    assert loaded.public_prefixes == ("public/", "thumbs/", "memo/blobs/")
    assert Settings.load({}, public_prefixes=["a/", "b"]).public_prefixes == ("a/", "b")
    assert Settings.load({}, public_prefixes="a/,b/").public_prefixes == ("a/", "b/")
    with pytest.raises(ConfigError, match=env):
        Settings.load({}, public_prefixes=["../etc/"])
    with pytest.raises(ConfigError, match="every object public"):
        Settings.load({}, public_prefixes=[""])


@pytest.mark.parametrize(
    "prefix",
    [
        *("debug/", "debug/2026-01-01/", "debug", "d", "de", "memo/", "memo", "m", "memo/sora/"),
        # A file remote on a case-insensitive disk (macOS, Windows) finds debug/... for
        # Debug/...: the private areas are matched in any case.
        *("Debug/", "DEBUG/2026-01-01/", "D", "Memo/", "MEMO/sora/"),
    ],
)
def test_no_public_prefix_covers_debug_bundles_or_memo_records(prefix: str) -> None:
    import cargohold

    with pytest.raises(ConfigError, match="never public") as err:
        Settings.load({"CARGOHOLD_PUBLIC_PREFIXES": f"ok/,{prefix}"})
    assert "CARGOHOLD_PUBLIC_PREFIXES" in str(err.value)
    with pytest.raises(ConfigError, match="never public"):
        cargohold.open("memory://public-prefix", public_prefixes=[prefix], signal_handlers=False)


def test_the_private_prefixes_are_where_bundles_and_memo_records_live(tmp_path: Path) -> None:
    """keys names them without importing the features (it is the first layer): check
    them against where the features really write."""
    import cargohold
    from cargohold.keys import PRIVATE_PREFIXES, PUBLIC_MEMO_PREFIX, never_public
    from cargohold.scratch import DEBUG_PREFIX

    assert DEBUG_PREFIX in PRIVATE_PREFIXES
    with cargohold.open("memory://private-prefixes", data_dir=tmp_path, signal_handlers=False) as h:
        h.memo("tts", version="1").get_or_create({"text": "hi"}, lambda i, w: b"audio")
        keys = [info.key for info in h.list("memo/")]
    records = [k for k in keys if k.endswith(".json")]
    blobs = [k for k in keys if not k.endswith(".json")]
    assert records
    assert all(never_public(k) for k in records)
    assert all(never_public(k, prefix=True) for k in records)
    assert blobs
    assert all(k.startswith(PUBLIC_MEMO_PREFIX) for k in blobs)
    assert not any(never_public(k) for k in blobs)
    assert Settings.load({}, public_prefixes=["memo/blobs/"]).public_prefixes == ("memo/blobs/",)
