"""The one run store, shared by the CLI, sweeps and the dashboard.

Layout: ``<runs_dir>/<run_id>/`` holds

- ``config.json``      everything needed to rerun (a :class:`faro_core.train.FaroConfig` as a dict)
- ``status.json``      queued | running | done | failed | interrupted, pid, heartbeat (unix seconds), error
- ``progress.json``    step, total_steps, fraction
- ``history.jsonl``    one line per logged step: loss, multipliers, violations
- ``metrics.json``     final metrics
- ``scores.parquet``   per-example rewards
- ``model.safetensors`` + ``model.json``  weights and how to rebuild the model
- ``checkpoint/``      last checkpoint (safetensors + JSON), what ``--resume`` reads
- other stages add their own files (``eval.json``, ``certificate.json``, ``policy.json``, ...)

Every file is written atomically (see :mod:`faro_core.io`). There is no separate mutable index file:
the index is the directory listing, so concurrent runs can never leave it inconsistent.
A run whose status says ``running`` but whose process is gone, or whose heartbeat is older than
:data:`STALE_AFTER_S`, reads as ``interrupted``.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faro_core.errors import RunError
from faro_core.io import append_jsonl, read_json, read_jsonl, write_json
from faro_core.paths import default_runs_dir

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STATUSES = ("queued", "running", "done", "failed", "interrupted")
HEARTBEAT_EVERY_S = 2.0
STALE_AFTER_S = 20.0
CANCEL_FILE = "cancel.json"


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is a safe directory name, else raise :class:`RunError` (no path traversal)."""
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id) or ".." in run_id:
        raise RunError(
            f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' only (no '/' or '..')"
        )
    return run_id


def new_run_id(prefix: str = "run") -> str:
    """A fresh, sortable run id: ``<prefix>-<yyyymmdd-hhmmss>-<4 hex>``."""
    prefix = re.sub(r"[^A-Za-z0-9._-]", "-", prefix)[:60] or "run"
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class Run:
    """Handle on one run directory."""

    run_id: str
    path: Path

    # --- files -------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return (self.path / "config.json").exists()

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.path / "config.json")

    def read(self, name: str, default: Any = None) -> Any:
        """Read a JSON file of this run, or ``default`` if it is absent."""
        p = self.path / name
        return read_json(p) if p.exists() else default

    def write(self, name: str, obj: Any, durable: bool = True) -> None:
        """Atomically write a JSON file of this run (``durable=False``: without an fsync, for files rewritten
        all the time; :func:`faro_core.io.write_json`)."""
        write_json(self.path / name, obj, durable=durable)

    # --- status ------------------------------------------------------------------------------
    def raw_status(self) -> dict[str, Any]:
        return self.read("status.json", {"status": "queued"})

    @property
    def status(self) -> str:
        """Effective status: a ``running`` run with a dead process or stale heartbeat is ``interrupted``."""
        st = self.raw_status()
        s = st.get("status", "queued")
        if s == "running":
            same_host = st.get("host") == socket.gethostname()
            pid = st.get("pid")
            if same_host and isinstance(pid, int) and not _pid_alive(pid):
                return "interrupted"
            if time.time() - float(st.get("heartbeat", 0)) > STALE_AFTER_S:
                return "interrupted"
        return s

    def set_status(self, status: str, **extra: Any) -> None:
        assert status in STATUSES, status
        st = self.raw_status()
        st.update(extra)
        st.update(status=status, pid=os.getpid(), host=socket.gethostname(), heartbeat=time.time())
        if status == "running":
            st.setdefault("started", time.time())
            st.pop("error", None)
        if status in ("done", "failed", "interrupted"):
            st["finished"] = time.time()
        self.write("status.json", st)

    def heartbeat(self) -> None:
        st = self.raw_status()
        if st.get("status") == "running":
            st["heartbeat"] = time.time()
            # atomic but not fsynced: rewritten every few seconds, and a heartbeat lost to a power failure
            # only makes the run read as interrupted sooner
            self.write("status.json", st, durable=False)

    # --- cancelling one member of a batch (its process trains others too, so it is asked, not killed) ---
    def request_cancel(self) -> None:
        """Ask the process training this run to stop it (``cancel.json``; the batched engine polls it)."""
        self.write(CANCEL_FILE, {"time": time.time()})

    def cancel_requested(self) -> bool:
        return (self.path / CANCEL_FILE).exists()

    def clear_cancel(self) -> None:
        (self.path / CANCEL_FILE).unlink(missing_ok=True)

    def progress(self) -> dict[str, Any]:
        return self.read("progress.json", {"step": 0, "total_steps": 0, "fraction": 0.0})

    def set_progress(self, step: int, total_steps: int, **extra: Any) -> None:
        frac = step / total_steps if total_steps else 0.0
        # atomic, not fsynced: rewritten every half second while a run trains (the final one is written
        # after the run's files, before its durable "done" status)
        self.write("progress.json", {"step": step, "total_steps": total_steps, "fraction": frac, **extra},
                   durable=False)

    def log(self, rows: list[dict[str, Any]]) -> None:
        append_jsonl(self.path / "history.jsonl", rows)

    def history(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "history.jsonl")

    def metrics(self) -> dict[str, Any]:
        return self.read("metrics.json", {})

    def summary(self) -> dict[str, Any]:
        """One row of the run index."""
        cfg = self.read("config.json", {}) or {}
        return {
            "run_id": self.run_id,
            "status": self.status,
            "name": cfg.get("name"),
            "constraints": cfg.get("constraints"),
            "epsilon": cfg.get("epsilon"),
            "seed": cfg.get("seed"),
            "mode": cfg.get("mode"),
            "method": cfg.get("method", "faro"),
            "sweep": cfg.get("sweep"),
            "created": self.raw_status().get("created"),
            "progress": self.progress().get("fraction", 0.0),
            "metrics": self.metrics(),
        }


class Heartbeat:
    """Context manager: keeps the ``status.json`` heartbeat of one or more runs (a batch's members) fresh
    from a daemon thread while work runs."""

    def __init__(self, run: Run, *more: Run, every_s: float = HEARTBEAT_EVERY_S) -> None:
        self.runs, self.every_s = (run, *more), every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            for run in self.runs:
                try:
                    run.heartbeat()
                except OSError:
                    pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class RunStore:
    """All runs under one directory (``--runs-dir``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_runs_dir()

    def path(self, run_id: str) -> Path:
        """The directory of ``run_id``; :class:`RunError` if the id is unsafe or the directory is a symlink
        (a link planted in the store must not let reads or writes escape it)."""
        p = self.root / validate_run_id(run_id)
        if p.is_symlink():
            raise RunError(f"run {run_id!r} in {self.root} is a symbolic link; run directories must be real "
                           f"directories inside the run store")
        return p

    def create(self, config: dict[str, Any], run_id: str | None = None, exist_ok: bool = False) -> Run:
        """Create a run directory with its config and ``queued`` status."""
        run_id = validate_run_id(run_id or new_run_id(str(config.get("name") or "run")))
        run = Run(run_id, self.path(run_id))
        if run.exists() and not exist_ok:
            raise RunError(f"run {run_id!r} already exists in {self.root}")
        run.path.mkdir(parents=True, exist_ok=True)
        write_json(run.path / "config.json", {**config, "run_id": run_id})
        if not (run.path / "status.json").exists():
            write_json(run.path / "status.json", {"status": "queued", "created": time.time()})
        return run

    def get(self, run_id: str) -> Run:
        """The run ``run_id``; :class:`RunError` if it is unsafe or unknown."""
        run = Run(validate_run_id(run_id), self.path(run_id))
        if not run.exists():
            raise RunError(f"unknown run {run_id!r} in {self.root} (see `faro runs list --runs-dir {self.root}`)")
        return run

    def has(self, run_id: str) -> bool:
        try:
            return Run(run_id, self.path(run_id)).exists()
        except RunError:
            return False

    def list(self) -> list[Run]:
        """Every run with a config, oldest first."""
        if not self.root.exists():
            return []
        runs = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and not p.is_symlink() and RUN_ID_RE.match(p.name) and (p / "config.json").exists():
                runs.append(Run(p.name, p))
        return sorted(runs, key=lambda r: (r.raw_status().get("created") or 0, r.run_id))

    def index(self) -> list[dict[str, Any]]:
        """The run index: one summary dict per run."""
        return [r.summary() for r in self.list()]
