"""Uploaded preference files: size and type checks, stored where the loaders can read them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from faro_core.errors import DataError
from faro_core.paths import cache_dir

MAX_UPLOAD_MB = 50
UPLOAD_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


def save_upload(name: str, data: bytes, dest: str | Path | None = None, max_mb: float = MAX_UPLOAD_MB) -> Path:
    """Check an uploaded file (type, size, not empty) and store it under ``dest``; return its path.

    The stored name keeps the suffix (the loaders detect the format from it) and adds a content hash,
    so the same upload maps to the same path.
    """
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise DataError(f"{name}: unsupported file type {suffix or '(none)'}; upload a CSV, JSONL or Parquet file")
    size_mb = len(data) / 2**20
    if size_mb > max_mb:
        raise DataError(f"{name}: {size_mb:.1f} MB is over the {max_mb:g} MB upload limit; "
                        "pass the file as a path instead (`faro train --data PATH`)")
    if not data.strip():
        raise DataError(f"{name}: the file is empty")
    if suffix == ".parquet" and not data.startswith(b"PAR1"):
        raise DataError(f"{name}: not a Parquet file (missing the PAR1 header)")
    root = Path(dest) if dest is not None else cache_dir() / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).stem)[:60] or "upload"
    path = root / f"{stem}-{hashlib.sha1(data).hexdigest()[:10]}{'.jsonl' if suffix == '.json' else suffix}"
    if not path.exists():
        path.write_bytes(data)
    return path
