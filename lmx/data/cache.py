"""On-disk cache location and atomic publication of cache entries.

Entries are directories under `cache_root(...)/<kind>/<key>/`; they are built in a temporary sibling
directory and renamed into place, so a reader never sees a half-written entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmx.config import DataConfig


def cache_root(data_config: DataConfig | None = None, override: str | os.PathLike | None = None) -> Path:
    """The cache directory: `override`, else `data.cache_dir`, else $LMX_CACHE, else ~/.cache/lmx."""
    for candidate in (
        override,
        data_config.cache_dir if data_config else "",
        os.environ.get("LMX_CACHE", ""),
    ):
        if candidate:
            return Path(candidate).expanduser()
    return Path.home() / ".cache" / "lmx"


def cache_key(*parts: Any) -> str:
    """A short, stable hex key naming a cache entry built from the JSON-serialisable `parts`."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary directory; on success rename it to `target` (kept if one already won)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race with a concurrent writer: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
