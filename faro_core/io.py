"""Atomic file writes: a reader never sees a half-written file.

Every write goes to a temporary file in the same directory, is fsynced, then ``os.replace``d over the
target (atomic on POSIX). Only safe formats are written: JSON, Parquet, safetensors.

Two ways to pay fewer fsyncs, neither weakening atomicity (a reader, or a process killed with ``kill -9``,
never sees a half-written file: the rename is what publishes it, and the page cache survives the process):

- ``durable=False`` (``write_json``): no fsync at all, for files that are rewritten all the time and whose
  loss in a power failure costs nothing (a heartbeat, a progress counter);
- :func:`one_sync`: the writes a thread makes inside the block skip their own fsync, and one ``syncfs`` of
  the file system at the end makes them all durable together (the batched engine's per-member files: one
  sync per batch instead of one per file). A caller that needs an order on disk (a checkpoint's tensors
  before the ``state.json`` naming them) uses two blocks.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_LOCAL = threading.local()  # this thread's depth of one_sync blocks
_SYNCFS: list[Callable[[int], int] | None] = []


def _syncfs(path: Path | str) -> None:
    """Flush the file system holding ``path`` to disk (Linux ``syncfs``; elsewhere ``os.sync``)."""
    if not _SYNCFS:
        try:
            fn = ctypes.CDLL(None, use_errno=True).syncfs
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
            _SYNCFS.append(fn)
        except (AttributeError, OSError):
            _SYNCFS.append(None)
    fn = _SYNCFS[0]
    if fn is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if fn(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


@contextlib.contextmanager
def joined_sync() -> Iterator[None]:
    """Atomic writes this thread makes inside the block skip their own fsync, for a worker thread whose
    caller waits for it inside a :func:`one_sync` block (whose sync at its end then covers these writes
    too): the batched engine's members finished in its threads."""
    depth = getattr(_LOCAL, "depth", 0)
    _LOCAL.depth = depth + 1
    try:
        yield
    finally:
        _LOCAL.depth = depth


@contextlib.contextmanager
def one_sync(path: Path | str) -> Iterator[None]:
    """Atomic writes this thread makes inside the block skip their own fsync; on leaving the outermost block
    (also on an error) one sync of the file system holding ``path`` (an existing file or directory) makes them
    durable. Atomicity is unchanged; only the point at which the files survive a power failure moves to the
    end of the block."""
    outermost = not getattr(_LOCAL, "depth", 0)
    try:
        with joined_sync():
            yield
    finally:
        if outermost:
            _syncfs(path)


def _atomic(path: Path, write: Callable[[str], None], durable: bool = True) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        if durable and not getattr(_LOCAL, "depth", 0):
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


def write_json(path: Path | str, obj: Any, durable: bool = True) -> None:
    """Atomically write ``obj`` as indented JSON (``durable=False``: without an fsync, see the module
    docstring)."""
    text = to_json(obj, indent=2)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text), durable)


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: Path | str, text: str) -> None:
    """Atomically write ``text`` (UTF-8)."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_bytes(path: Path | str, data: bytes) -> None:
    """Atomically write ``data`` (a file already encoded in one of the safe formats, e.g. Parquet bytes)."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_bytes(data))


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
