"""What a valid key is, in one place, and how a key maps to a path.

A key is a ``/``-separated relative name such as ``videos/2026/a.mp4``. The rules, each
enforced by :func:`normalize_key` with an :class:`~cargohold.errors.InvalidKey` that names
the rule broken:

- a ``str``, not empty, at most 1024 bytes in UTF-8 (the S3 limit);
- no leading ``/`` (keys are relative) and no empty segments (``a//b``, a trailing ``/``);
- no ``.`` or ``..`` segments (they would walk out of a folder);
- no backslash (a path separator on Windows), no NUL and no control characters;
- each segment at most 255 bytes in UTF-8 (the longest file name most file systems allow,
  so every key can also be a file in the local tier and the ``file`` remote);
- not under ``.cargohold/``, which is reserved for cargohold's own records.

Unicode is normalised to NFC, so the two spellings of ``é`` (one code point, or ``e`` and a
combining accent) are one key. Because of these rules, :func:`key_to_path` can never
produce a path outside the root it is given.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from .errors import InvalidKey

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "RESERVED_PREFIX",
    "InternalKey",
    "internal_key",
    "internal_prefix",
    "join_key",
    "key_to_path",
    "never_public",
    "normalize_key",
    "normalize_prefix",
]

MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
RESERVED_PREFIX = ".cargohold/"

#: Where keys that are never public live: debug bundles (``cargohold.scratch.DEBUG_PREFIX``:
#: a failed request's files and record) and generation-cache records (``memo/NS/VERSION/``:
#: their inputs). Written here, not imported: keys is the first layer.
PRIVATE_PREFIXES = ("debug/", "memo/")
#: Memo result files, named by their digest: the only keys under ``memo/`` that may be
#: public. A namespace may be called ``blobs``: its records live under this prefix too.
PUBLIC_MEMO_PREFIX = "memo/blobs/"
_MEMO_BLOB = re.compile(r"memo/blobs/[0-9a-f]{2}/[0-9a-f]{64}")


def never_public(name: str, *, prefix: bool = False) -> bool:
    """Whether the key ``name`` is a debug bundle's or a memo record's (or, with
    ``prefix=True``, whether any key under the prefix ``name`` may be one): such keys are
    never public, whatever ``public_prefixes`` says. The one statement of that rule: config
    refuses a public prefix by it and the HTTP service checks each key and listing by it.

    A memo result file (``memo/blobs/XX/<sha256>``) is not private; every other key under
    ``memo/`` is, so every prefix under ``memo/`` covers private keys. Compared case-folded:
    a file remote on a case-insensitive disk (macOS, Windows) finds ``debug/x`` when
    asked for ``DEBUG/x``."""
    name = name.casefold()
    if prefix:
        return any(area.startswith(name) or name.startswith(area) for area in PRIVATE_PREFIXES)
    return name.startswith(PRIVATE_PREFIXES) and not _MEMO_BLOB.fullmatch(name)


def _is_control(ch: str) -> bool:
    # C0 controls, DEL and C1 controls: invisible in logs, refused by many file systems.
    code = ord(ch)
    return code < 0x20 or 0x7F <= code <= 0x9F


def _check_chars(text: str, what: str) -> str:
    """NFC-normalise ``text`` and reject characters no key may contain."""
    if not isinstance(text, str):
        raise InvalidKey(f"a {what} must be a str, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKey(
            f"{what} {text!r} is not valid UTF-8 (it contains a lone surrogate)", key=text
        ) from None
    text = unicodedata.normalize("NFC", text)
    for ch in text:
        if ch == "\\":
            raise InvalidKey(
                f"{what} {text!r} contains a backslash; use '/' to separate folders", key=text
            )
        if _is_control(ch):
            raise InvalidKey(
                f"{what} {text!r} contains the control character U+{ord(ch):04X}", key=text
            )
    if len(text.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is longer than {MAX_KEY_BYTES} bytes in UTF-8", key=text[:64])
    return text


def _check_segments(text: str, segments: list[str], what: str) -> None:
    for segment in segments:
        if segment == "":
            raise InvalidKey(
                f"{what} {text!r} has an empty segment ('//' or a trailing '/')", key=text
            )
        if segment in (".", ".."):
            raise InvalidKey(f"{what} {text!r} has a {segment!r} segment", key=text)
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKey(
                f"{what} {text!r} has a segment longer than {MAX_SEGMENT_BYTES} bytes",
                key=text[:64],
            )
    if segments and segments[0] == RESERVED_PREFIX.rstrip("/"):
        raise InvalidKey(
            f"{what} {text!r} is under {RESERVED_PREFIX!r}, which cargohold reserves", key=text
        )


class InternalKey(str):
    """A key under the reserved ``.cargohold/`` prefix, for cargohold's own records
    (leases, probes). Only :func:`internal_key` makes one; user keys can never collide."""

    __slots__ = ()


def internal_key(name: str) -> InternalKey:
    """The reserved key ``.cargohold/<name>``; ``name`` follows the usual key rules."""
    return InternalKey(RESERVED_PREFIX + normalize_key(name))


def internal_prefix(name: str) -> InternalKey:
    """A listing prefix under ``.cargohold/`` (``name`` follows the prefix rules)."""
    return InternalKey(RESERVED_PREFIX + normalize_prefix(name))


# Plain ASCII keys made of common characters, without '.' or '..' segments or a reserved
# start: already canonical, so they skip the character-by-character checks below.
_PLAIN = re.compile(
    r"(?!\.cargohold/)(?!\.\.?(?:/|$))[A-Za-z0-9_\-+=,@~ ][A-Za-z0-9_.\-+=,@~ ]{0,254}"
    r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9_.\-+=,@~ ]{1,255})*"
)


def normalize_key(key: str) -> str:
    """Return ``key`` in canonical (NFC) form, or raise :class:`InvalidKey` naming the rule broken."""
    if isinstance(key, InternalKey):
        return key
    if type(key) is str and len(key) <= MAX_KEY_BYTES and _PLAIN.fullmatch(key):
        return key
    key = _check_chars(key, "key")
    if key == "":
        raise InvalidKey("a key must not be empty")
    if key.startswith("/"):
        raise InvalidKey(f"key {key!r} starts with '/'; keys are relative names", key=key)
    _check_segments(key, key.split("/"), "key")
    return key


def normalize_prefix(prefix: str) -> str:
    """Return a listing prefix in canonical form (an :class:`InternalKey` passes as it is).

    A prefix is matched as a plain string, like S3's: ``"videos/a"`` matches ``videos/a.mp4``
    and ``videos/ab/c``. It may be empty, may end in ``/`` and may end part-way through a
    segment; otherwise it follows the key rules.
    """
    if isinstance(prefix, InternalKey):
        return prefix
    prefix = _check_chars(prefix, "prefix")
    if prefix == "":
        return prefix
    if prefix.startswith("/"):
        raise InvalidKey(f"prefix {prefix!r} starts with '/'; keys are relative names", key=prefix)
    segments = prefix.split("/")
    if segments[-1] == "":
        segments.pop()  # a trailing '/' names a folder
    elif segments[-1] in (".", ".."):
        segments.pop()  # the start of a name such as '..hidden' is still a fine prefix
    _check_segments(prefix, segments, "prefix")
    return prefix


def join_key(prefix: str, key: str) -> str:
    """Join a folder-like prefix (``""`` or ending in ``/`` or not) and a key."""
    if not prefix:
        return key
    return prefix.rstrip("/") + "/" + key


def key_to_path(root: Path, key: str) -> Path:
    """The path of ``key`` under ``root``. Always inside ``root``: the key rules forbid escape."""
    return root.joinpath(*normalize_key(key).split("/"))
