"""Key rules: every rule has a named error, and no key can reach outside the root."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cargohold import InvalidKey
from cargohold.keys import (
    InternalKey,
    internal_key,
    key_to_path,
    never_public,
    normalize_key,
    normalize_prefix,
)


@pytest.mark.parametrize(
    ("key", "rule"),
    [
        ("", "must not be empty"),
        ("/etc/passwd", "starts with '/'"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("a/./b", "'.' segment"),
        ("../secret", "'..' segment"),
        ("a/..", "'..' segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "U\\+0000"),
        ("tab\there", "U\\+0009"),
        ("del\x7f", "U\\+007F"),
        ("c1\x85", "U\\+0085"),
        (".cargohold/leases/x", "reserves"),
        ("x" * 1025, "longer than 1024 bytes"),
        ("é" * 513, "longer than 1024 bytes"),
        ("a/" + "s" * 256, "segment longer than 255 bytes"),
        ("bad\ud800", "lone surrogate"),
    ],
)
def test_each_rule_is_named(key: str, rule: str) -> None:
    with pytest.raises(InvalidKey, match=rule):
        normalize_key(key)


def test_non_str_keys_are_refused() -> None:
    with pytest.raises(InvalidKey, match="must be a str"):
        normalize_key(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidKey, match="must be a str"):
        normalize_key(Path("a"))  # type: ignore[arg-type]


def test_invalid_key_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        normalize_key("")


def test_good_keys_pass_unchanged() -> None:
    for key in [
        "a",
        "videos/2026/a.mp4",
        ".hidden",
        "a/.b",
        "...",
        "sp ace/x",
        "日本/語",
        "a" * 255,
    ]:
        assert normalize_key(key) == key


def test_unicode_is_nfc() -> None:
    nfd = unicodedata.normalize("NFD", "café/naïve")
    assert normalize_key(nfd) == "café/naïve"
    assert normalize_key(nfd) == unicodedata.normalize("NFC", nfd)


def test_prefixes() -> None:
    assert normalize_prefix("") == ""
    assert normalize_prefix("videos/") == "videos/"
    assert normalize_prefix("videos/a") == "videos/a"
    assert normalize_prefix("a/.") == "a/."
    for bad in ("/a", "a//", "../", "a\\", ".cargohold/"):
        with pytest.raises(InvalidKey):
            normalize_prefix(bad)


def test_internal_keys_are_the_only_way_into_the_reserved_prefix() -> None:
    key = internal_key("leases/abc")
    assert isinstance(key, InternalKey)
    assert key == ".cargohold/leases/abc"
    assert normalize_key(key) == key
    with pytest.raises(InvalidKey):
        normalize_key(".cargohold/leases/abc")
    with pytest.raises(InvalidKey):
        internal_key("../escape")


@given(st.text(min_size=1, max_size=300))
@example("..")
@example("a/../../b")
@example("/etc/passwd")
@example("a\\..\\..\\b")
@example("\u2025")  # two-dot leader: NFC leaves it alone, unlike NFKC
@example("\uff0e\uff0e")  # fullwidth dots: NFC leaves them alone too
def test_no_key_maps_outside_the_root(text: str) -> None:
    root = Path("/srv/hold/root")
    try:
        path = key_to_path(root, text)
    except InvalidKey:
        return
    resolved = Path(os.path.normpath(path))
    assert resolved == path, "a valid key never contains anything normpath would collapse"
    assert root in resolved.parents
    assert resolved.relative_to(root).as_posix() == normalize_key(text)


@given(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=6))
def test_segments_join_into_a_path_under_the_root(segments: list[str]) -> None:
    root = Path("/srv/hold/root")
    text = "/".join(segments)
    try:
        path = key_to_path(root, text)
    except InvalidKey:
        return
    assert root in path.parents
    assert len(path.relative_to(root).parts) == len(text.split("/"))


BLOB = "memo/blobs/ab/" + "ab" * 32


@pytest.mark.parametrize(
    ("key", "private"),
    [
        ("debug/2026-01-01/req-1/record.json", True),
        ("debug/2026-01-01/req-1/files/upload.wav", True),
        ("DEBUG/2026-01-01/req-1/record.json", True),  # a case-insensitive disk finds it
        ("Memo/sora/1/ab/" + "ab" * 32 + ".json", True),
        ("memo/sora/1/ab/" + "ab" * 32 + ".json", True),
        ("memo/blobs/1/ab/" + "ab" * 32 + ".json", True),  # a namespace called "blobs"
        (BLOB + ".json", True),
        ("memo/blobs/ab", True),
        (BLOB, False),  # a result file, named by its digest
        (BLOB.upper().replace("MEMO/BLOBS/", "memo/blobs/"), False),
        ("debugger/x", False),
        ("memories/x", False),
        ("public/debug/x", False),
    ],
)
def test_never_public_keys(key: str, private: bool) -> None:
    assert never_public(key) is private


@pytest.mark.parametrize(
    ("prefix", "covers"),
    [
        ("", True),
        ("d", True),
        ("DeB", True),
        ("debug/", True),
        ("memo/", True),
        ("memo/blobs/", True),  # a "blobs" namespace's records are listed there too
        ("memo/blobs/ab/", True),
        ("Memo/Blobs/", True),
        ("public/", False),
        ("debugger/", False),
        ("x", False),
    ],
)
def test_never_public_prefixes(prefix: str, covers: bool) -> None:
    assert never_public(prefix, prefix=True) is covers
