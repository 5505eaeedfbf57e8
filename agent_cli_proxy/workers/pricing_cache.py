"""The pricing cache file: its format, reading it tolerantly, replacing it atomically.

Format written (version 1)::

    {"version": 1, "fetched_at": <epoch s>, "url": "<PRICING_URL>", "data": {<models.dev>}}

The raw models.dev document is kept, not a derived table, so that better matching in
``usage.pricing`` applies to cached data too. The original program's file
(``{"fetchedAt": <epoch ms>, "data": [[key, price], …]}``) is recognised but not trusted
(see :func:`_from_original`); the next successful refresh rewrites it in this format.
Anything unusable is :class:`CacheInvalid`, never a crash.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from agent_cli_proxy.upstream.models_dev import MAX_BYTES

CACHE_VERSION = 1


class CacheInvalid(Exception):
    """The cache file exists but cannot be used; the message says why."""


def cache_document(data: Mapping[str, Any], fetched_at: float, url: str) -> dict[str, Any]:
    """What :func:`write_cache` stores for a fetched models.dev document."""
    return {"version": CACHE_VERSION, "fetched_at": fetched_at, "url": url, "data": data}


def read_cache(path: str) -> tuple[dict[str, Any], float]:
    """``(models.dev document, fetched_at)`` from the cache file at *path*.

    Raises FileNotFoundError when there is none and :class:`CacheInvalid` when it cannot be
    used (unreadable, too large, not JSON, an unknown shape).
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CacheInvalid(f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise CacheInvalid(f"larger than {MAX_BYTES} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CacheInvalid(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CacheInvalid(f"JSON {type(document).__name__}, expected an object")
    if "version" in document:
        if document["version"] != CACHE_VERSION:
            raise CacheInvalid(f"unsupported version {document['version']!r}")
        data = document.get("data")
        if not isinstance(data, dict):
            raise CacheInvalid('"data" is not an object')
        return data, _timestamp(document.get("fetched_at"), "fetched_at", 1.0)
    if "fetchedAt" in document:
        return _from_original(document)
    raise CacheInvalid('not a pricing cache (no "version" or "fetchedAt")')


def _timestamp(value: object, name: str, per_second: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0):
        raise CacheInvalid(f'"{name}" is not a positive timestamp')
    return float(value) / per_second


def _from_original(document: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
    """The TypeScript original's cache is not used: its flat ``[key, price]`` list stores
    resellers' ids (``openai/o3`` from OpenRouter) beside vendors' and lets the last
    writer win, so rebuilding vendor prices from it would price calls from the wrong
    provider. The next fetch replaces it; until then the built-in table applies."""
    raise CacheInvalid("written by the TypeScript original (its flat price list mixes "
                       "resellers' prices under vendor names); ignored until the next fetch")


def write_cache(path: str, document: Mapping[str, Any]) -> None:
    """Replace the file at *path* atomically: readers (and a crash) see the old file or the
    new one, never a part. The file is private (0600); missing parents are created (0700)."""
    payload = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    # Same directory as the target, so os.replace is a rename within one filesystem.
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable; not every platform or filesystem allows this.
    with contextlib.suppress(OSError):
        dir_fd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
