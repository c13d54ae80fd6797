"""The durable tier: one small protocol, one module per kind of remote.

=====================================  =============================================
``memory://[NAME]``                    in this process (tests, throwaway holds)
``file:///path``                       a directory: a mounted volume, a share, any folder
``s3://bucket[/prefix][?...]``         any S3-compatible store (``pip install 'cargohold[s3]'``)
``hf://datasets/OWNER/NAME[/prefix]``  a Hugging Face dataset repo, written in commits
                                       (``pip install 'cargohold[hf]'``)
``hf://buckets/OWNER/NAME[/prefix]``   a Hugging Face Storage Bucket through the Hub's
                                       own bucket API: a token is enough, but no
                                       create-only or if-match puts (``cargohold[hf]``)
``hf-s3://OWNER/NAME[/prefix]``        a Hugging Face Storage Bucket through the Hub's
                                       S3 gateway, with S3 keys (HFAK...); conditional
                                       puts hold (``cargohold[s3]``). Until 2026-12-08
                                       ``hf-bucket://``, which still works (warned)
=====================================  =============================================

:func:`open_remote` turns a URL into a :class:`Remote`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..config import Settings
from ..errors import ConfigError
from ._base import ByteRange, Delete, ObjectInfo, ObjectStream, Put, PutData, PutMode, Remote
from .file import FileRemote
from .memory import MemoryRemote

log = logging.getLogger(__name__)

__all__ = [
    "ByteRange",
    "Delete",
    "FileRemote",
    "MemoryRemote",
    "ObjectInfo",
    "ObjectStream",
    "Put",
    "PutData",
    "PutMode",
    "Remote",
    "open_remote",
]

_SCHEMES = (
    "memory://NAME, file:///PATH, s3://BUCKET/PREFIX, hf://datasets/OWNER/NAME/PREFIX, "
    "hf://buckets/OWNER/NAME/PREFIX, hf-s3://OWNER/NAME/PREFIX"
)


def open_remote(url: str, *, settings: Settings | None = None) -> Remote:
    """Open the remote a URL names. Raises ConfigError for an unknown scheme or a missing extra.

    Nothing is contacted here: a wrong endpoint or credential shows on first use.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"remote {url!r} is not a URL",
            hint=f"use one of {_SCHEMES}",
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryRemote(url.split("://", 1)[1].strip("/"))
    if scheme == "file":
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"file URL {url!r} names a host ({parts.netloc!r})",
                hint="use three slashes for a local path: file:///mnt/volume/app",
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"file URL {url!r} has no absolute path", hint="use file:///abs/path")
        return FileRemote(Path(path))
    if scheme == "s3":
        try:
            from .s3 import S3Remote
        except ImportError as exc:
            raise ConfigError(
                "s3:// remotes need obstore",
                hint="pip install 'cargohold[s3]'",
            ) from exc
        return S3Remote.from_url(url, settings=settings)
    if scheme == "hf":
        try:
            from .hf import HfRemote
            from .hf_buckets import HfBucketRemote
        except ImportError as exc:
            raise ConfigError(
                "hf:// remotes need huggingface_hub",
                hint="pip install 'cargohold[hf]'",
            ) from exc
        if urlsplit(url).netloc == "buckets":
            return HfBucketRemote.from_url(url, settings=settings)
        return HfRemote.from_url(url, settings=settings)
    if scheme == "hf-bucket":  # the name until 2026-12-08: kept working, with a warning
        log.warning(
            "cargohold: hf-bucket:// is now hf-s3:// (the Hub's S3 gateway, beside "
            "hf://buckets/, its native API): %r still works; write hf-s3:// instead",
            url,
        )
        return _hf_s3("hf-s3" + url[len("hf-bucket") :], settings or Settings.load())
    if scheme == "hf-s3":
        return _hf_s3(url, settings or Settings.load())
    raise ConfigError(
        f"unknown remote scheme {scheme + '://'!r} in {url!r}", hint=f"use one of {_SCHEMES}"
    )


def _hf_s3(url: str, settings: Settings) -> Remote:
    """``hf-s3://OWNER/NAME[/PREFIX]``: the S3 remote on the Hub's S3 gateway, fitted
    to what the gateway implements (:mod:`cargohold.remotes.hf_gateway`)."""
    try:
        from .hf_gateway import HfGatewayRemote
    except ImportError as exc:
        raise ConfigError(
            "hf-s3:// remotes need obstore", hint="pip install 'cargohold[s3]'"
        ) from exc
    return HfGatewayRemote.from_hf_url(url, settings)
