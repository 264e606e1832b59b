"""Caches shipped with Faro's demo data: encoder features and reference-LM scores, verified on load.

A shipped cache folder (``faro_core/assets/demo_bbq/cache/``) holds files and a ``manifest.json``::

    {"version": 1, "files": [{"file": ..., "kind": "features" | "pi_ref", "key": <cache key>,
                              "max_length": <int, features only>, "rows": <int>, "sha256": <hex>}, ...]}

``key`` is the same cache key the on-disk caches use (:func:`faro_core.models.features.backbone_key`,
:func:`faro_core.policy.lm.lm_key`), which is location-independent for the embedded models. A file is used
only when its manifest entry matches the key asked for and its bytes hash to the recorded SHA-256; anything
else (a missing, truncated, edited or foreign file, a malformed manifest) is skipped with a warning, so the
caller encodes or scores instead. Shipped files are never written at run time. Formats: safetensors (keys
``keys`` [n, 20] uint8 SHA-1 text keys, ``features`` [n, d] float32, exactly what the encoder gives, so data sharing the demo's texts trains the same with or without them) and Parquet (``key, logp, ntok``).
Set ``FARO_NO_SHIPPED_CACHE=1`` to ignore them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from faro_core.paths import DEMO_DATA_DIR

MANIFEST = "manifest.json"


def shipped_dirs() -> list[Path]:
    """Folders searched for shipped caches (none when ``FARO_NO_SHIPPED_CACHE`` is set)."""
    if os.environ.get("FARO_NO_SHIPPED_CACHE"):
        return []
    return [DEMO_DATA_DIR / "cache"]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _warn(msg: str) -> None:
    warnings.warn(f"shipped cache ignored: {msg}", RuntimeWarning, stacklevel=3)


@lru_cache(maxsize=64)
def _verified(path: str, sha256: str, mtime_ns: int, size: int) -> bool:
    # keyed by mtime and size too, so an edited file is hashed again
    return file_sha256(Path(path)) == sha256


def _entries(folder: Path) -> list[dict[str, Any]]:
    mpath = folder / MANIFEST
    if not mpath.exists():
        return []
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("version") != 1 or not isinstance(files, list):
            raise ValueError("unknown manifest version")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _warn(f"{mpath}: malformed manifest ({exc})")
        return []
    return [e for e in files if isinstance(e, dict)]


def shipped_files(kind: str, key: str, **match: Any) -> list[Path]:
    """Verified shipped files of ``kind`` for cache ``key`` (and e.g. ``max_length``), in manifest order."""
    out = []
    for folder in shipped_dirs():
        for e in _entries(folder):
            if e.get("kind") != kind or e.get("key") != key or any(e.get(k) != v for k, v in match.items()):
                continue
            path = folder / str(e.get("file", ""))
            if not path.is_file() or path.parent != folder:
                _warn(f"{path}: listed in {folder / MANIFEST} but missing")
                continue
            st = path.stat()
            if not _verified(str(path), str(e.get("sha256")), st.st_mtime_ns, st.st_size):
                _warn(f"{path}: its SHA-256 does not match the manifest (a corrupt or edited file)")
                continue
            out.append(path)
    return out


def shipped_features(key: str, max_length: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(keys [n, 20] uint8, features [n, d] float32)`` of each verified shipped feature file."""
    from safetensors.numpy import load_file

    out = []
    for path in shipped_files("features", key, max_length=int(max_length)):
        try:
            t = load_file(str(path))
            keys, feats = t["keys"], t["features"]
            if keys.ndim != 2 or keys.shape[1] != 20 or feats.ndim != 2 or len(feats) != len(keys):
                raise ValueError(f"shapes {keys.shape} / {feats.shape}")
        except Exception as exc:  # verified bytes that still do not parse: skip, never trust
            _warn(f"{path}: unreadable ({exc})")
            continue
        out.append((keys, feats.astype(np.float32)))
    return out


def shipped_pi_ref(key: str) -> list[Any]:
    """Frames ``key, logp, ntok`` of each verified shipped reference-LM score file."""
    import pandas as pd

    out = []
    for path in shipped_files("pi_ref", key):
        try:
            df = pd.read_parquet(path)
            if not {"key", "logp", "ntok"} <= set(df.columns):
                raise ValueError(f"columns {sorted(df.columns)}")
        except Exception as exc:
            _warn(f"{path}: unreadable ({exc})")
            continue
        out.append(df[["key", "logp", "ntok"]])
    return out


def write_manifest(folder: Path, entries: Iterable[dict[str, Any]]) -> Path:
    """(Maintainers) record ``entries`` (each with ``file``, ``kind``, ``key`` ...) with their hashes."""
    from faro_core.io import write_json

    files = []
    for e in entries:
        path = folder / e["file"]
        files.append({**e, "sha256": file_sha256(path), "bytes": path.stat().st_size})
    write_json(folder / MANIFEST, {"version": 1, "files": files})
    return folder / MANIFEST
