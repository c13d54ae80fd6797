"""The canonical form of memo inputs, and the digest that names an entry.

An entry's key is ``sha256(canonical(namespace, version, inputs))``. The canonical form is
JSON with sorted keys, no whitespace, UTF-8 text (not ``\\u`` escapes), integers as written
and floats in Python's shortest round-trip form, which every Python 3 prints the same way.
So the same inputs give the same key in every process, on every machine, in every Python
version this library supports.

Accepted inputs: ``None``, ``bool``, ``int``, finite ``float``, ``str``, lists and tuples
(the same: both become JSON arrays), and dicts with ``str`` keys, nested freely. Anything
else (bytes, sets, paths, NaN, objects) raises :class:`~cargohold.errors.InvalidInput`
naming where in the inputs it is, because it has no single canonical form.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from .errors import InvalidInput

__all__ = ["canonical", "digest_header", "entry_digest"]


def _check(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where} is {value!r}: NaN and infinities have no canonical form")
        return value
    if isinstance(value, list | tuple):
        return [_check(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{where} has the key {key!r}: input mappings need str keys")
            out[key] = _check(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, bytes | bytearray):
        hint = "pass a digest of the bytes (hashlib.sha256(data).hexdigest()) instead"
    elif isinstance(value, set | frozenset):
        hint = "use a sorted list"
    else:
        hint = "use str, int, float, bool, None, lists and dicts"
    raise InvalidInput(f"{where} is a {type(value).__name__}, which has no canonical form: {hint}")


def canonical(inputs: Mapping[str, Any]) -> bytes:
    """The canonical JSON bytes of ``inputs`` (see the module docstring)."""
    if not isinstance(inputs, Mapping):
        raise InvalidInput(
            f"memo inputs must be a mapping of names to values, not {type(inputs).__name__}"
        )
    checked = _check(inputs, "inputs")
    return json.dumps(
        checked, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def digest_header(namespace: str, version: str) -> bytes:
    """What precedes the inputs in the hashed text: ``["namespace","version"]\n``."""
    return (
        json.dumps([namespace, version], separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    )


def entry_digest(
    namespace: str, version: str, inputs: Mapping[str, Any], *, header: bytes | None = None
) -> str:
    """The hex SHA-256 naming the entry for ``inputs`` in ``namespace`` at ``version``."""
    prefix = header if header is not None else digest_header(namespace, version)
    return hashlib.sha256(prefix + canonical(inputs)).hexdigest()
