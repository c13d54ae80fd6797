"""Secrets out of what cargohold writes down: request records, tracebacks, stored URLs.

Redacted, and replaced with ``[redacted]``:

- the value of any mapping entry whose name contains ``token``, ``key``, ``secret``,
  ``password``, ``passwd``, ``authorization``, ``cookie``, ``credential``, ``signature`` or
  ``session`` (case-insensitive), at any depth of dicts and lists;
- in any text: ``Bearer <token>`` and ``Basic <token>``, Hugging Face tokens (``hf_...``),
  OpenAI-style keys (``sk-...``), AWS access key ids (``AKIA...``), GitHub tokens
  (``ghp_...``, ``github_pat_...``), and ``name=value`` pairs whose name is secret-looking
  (a URL's query, a command line);
- in a URL: user and password, and secret-looking query values.

Over-redaction is the accepted cost: a field called ``keyboard`` loses its value too.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "redact", "redact_text", "redact_url", "secret_name"]

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"token|key|secret|passw|authorization|cookie|credential|signature|session", re.IGNORECASE
)
_SECRET_VALUES = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{16,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\b(ghp|gho|ghs|ghu)_[A-Za-z0-9]{20,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
)
# name=value (or name: value) where the name looks secret: query strings, env dumps, argv.
# (Not exception names: "KeyError: 'prompt'" stays readable.)
_SECRET_PAIR = re.compile(
    r"(?i)\b(?![\w.-]*(?:error|exception|warning)\b)"
    r"([\w.-]*(?:token|key|secret|passw|authorization|credential|signature)[\w.-]*)"
    r"([\"']?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s&,;\"']+)"
)


def secret_name(name: str) -> bool:
    """True when a field called ``name`` probably holds a secret."""
    return bool(_SECRET_NAME.search(name))


def redact_text(text: str) -> str:
    """``text`` with secret-looking values replaced."""
    for pattern in _SECRET_VALUES:
        text = pattern.sub(_keep_scheme, text)
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def _keep_scheme(match: re.Match[str]) -> str:
    scheme = match.group(0).split(None, 1)[0]
    if scheme.lower() in ("bearer", "basic"):
        return f"{scheme} {REDACTED}"
    return REDACTED


def redact(value: Any) -> Any:
    """A copy of ``value`` (JSON-like: dicts, lists, text, numbers) with secrets redacted."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if secret_name(str(k)) and v not in (None, "") else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_url(url: str) -> str:
    """``url`` without user, password or secret-looking query values."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    cleaned = [(k, REDACTED if secret_name(k) else redact_text(v)) for k, v in query]
    return urllib.parse.urlunsplit(
        (parts.scheme, netloc, parts.path, urllib.parse.urlencode(cleaned, safe="[]"), "")
    )
