"""Atomic file writes: a reader never sees a half-written file.

Every write goes to a temporary file in the same directory, is fsynced, then ``os.replace``d over the
target (atomic on POSIX). Only safe formats are written: JSON, Parquet, safetensors.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _atomic(path: Path, write: Callable[[str], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats to plain JSON (NaN/inf -> null)."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any, **kw: Any) -> str:
    """JSON text of ``obj`` with numpy values converted and NaN/inf written as null."""
    return json.dumps(_jsonable(obj), **kw)


def write_json(path: Path | str, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    text = to_json(obj, indent=2)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: Path | str, text: str) -> None:
    """Atomically write ``text`` (UTF-8)."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_parquet(path: Path | str, df: Any) -> None:
    """Atomically write a pandas DataFrame as Parquet."""
    _atomic(Path(path), lambda tmp: df.to_parquet(tmp, index=False))


def write_safetensors(path: Path | str, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a dict of torch tensors as safetensors."""
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(contiguous, tmp, metadata=metadata))


def append_jsonl(path: Path | str, rows: list[dict[str, Any]]) -> None:
    """Append rows to a JSONL log. Each line is written whole; a torn last line is skipped by readers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write("".join(to_json(r) + "\n" for r in rows))
        fh.flush()


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """Read a JSONL log, ignoring a torn final line left by a killed writer."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
