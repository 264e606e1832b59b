"""Launch training runs as background processes through the CLI, list the queue, cancel a run.

Shared by the dashboard's Train page, tests and scripts: a launched run is an ordinary
``python -m faro_core train --config DIR/ID/launch_config.json --runs-dir DIR --run-id ID`` process in its own
session (process group), writing to the same run store as everything else. Its settings travel as a validated
:class:`~faro_core.train.config.FaroConfig` in that JSON file, never as a rebuilt command line. The
launcher writes ``launch.json`` (pid, argv, time) and ``launch.log`` (the process's stdout/stderr) into the run
directory before the process starts, so a run shows in the queue as ``starting`` before its ``config.json``
exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from faro_core.errors import FaroError, RunError
from faro_core.io import read_json, write_json
from faro_core.store.runs import Run, RunStore, _pid_alive, new_run_id, validate_run_id
from faro_core.train.config import FaroConfig

LAUNCH_FILE = "launch.json"
LOG_FILE = "launch.log"
CONFIG_FILE = "launch_config.json"


def train_argv(run_id: str, runs_dir: str, config_path: str, extra: Sequence[str] = ()) -> list[str]:
    """The ``faro train`` command line of one launched run: its settings come from ``config_path``."""
    return [sys.executable, "-m", "faro_core", "train", "--config", str(config_path), "--runs-dir",
            str(runs_dir), "--run-id", run_id, "--quiet", "--json", *extra]


def launch_config(config: FaroConfig | None = None, **kw: Any) -> FaroConfig:
    """The validated config of one launched run: ``config`` itself, or one built from ``kw`` (FaroConfig field
    names; ``constraint="dp"`` or ``"dp,eo"`` is accepted for ``constraints``).
    A value outside a field's range raises :class:`FaroError` here, before any process starts."""
    if config is not None:
        if kw:
            raise FaroError(f"pass either a config or settings, not both (got {', '.join(sorted(kw))})")
        return FaroConfig(**config.to_dict())  # validated again: fields may have been set after construction
    if "constraint" in kw:
        kw.setdefault("constraints", kw.pop("constraint") or [])
    return FaroConfig(**kw)


def launch(store: RunStore, argv: Sequence[str], run_id: str, env: dict[str, str] | None = None,
           target: str = "local-cpu", files: dict[str, Any] | None = None) -> int:
    """Start ``argv`` detached (new session) for ``run_id``; return its pid.

    Refuses a run id that already exists or is already being launched. ``files`` (name -> JSON object) are
    written into the run directory before the process starts.
    """
    validate_run_id(run_id)
    path = store.path(run_id)
    if (path / "config.json").exists() or (path / LAUNCH_FILE).exists():
        raise RunError(f"run {run_id!r} already exists in {store.root}; pick another id")
    path.mkdir(parents=True, exist_ok=True)
    for name, obj in (files or {}).items():
        write_json(path / name, obj)
    log = open(path / LOG_FILE, "ab")
    try:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})},
                                close_fds=True)
    finally:
        log.close()
    write_json(path / LAUNCH_FILE, {"pid": proc.pid, "pgid": proc.pid, "argv": list(argv), "time": time.time(),
                                    "target": target})
    _CHILDREN[run_id] = proc  # keep a handle so the child is reaped (no zombie) when it exits
    return proc.pid


_CHILDREN: dict[str, subprocess.Popen[bytes]] = {}


def compute_resources(ray_address: str | None = None) -> dict[str, Any]:
    """What this machine (and a Ray cluster) offers: ``{"cpu_cores", "cuda": [{"index", "name",
    "memory_gb"}], "ray": {...} | None, "ray_error": str | None}``. The Ray cluster is the one at
    ``ray_address`` (default ``RAY_ADDRESS``); none when that is unset."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda.append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                         "bf16": bool(torch.cuda.is_bf16_supported())})
    out: dict[str, Any] = {"cpu_cores": cores, "cuda": cuda, "ray": None, "ray_error": None}
    address = ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        from faro_core.train.ray_launch import cluster_summary

        try:
            out["ray"] = cluster_summary(address)
        except FaroError as exc:
            out["ray_error"] = str(exc)
    return out


def launch_train(store: RunStore, run_id: str | None = None, config: FaroConfig | None = None,
                 target: str = "local-cpu", num_gpus: float | None = None, extra: Sequence[str] = (),
                 **kw: Any) -> str:
    """Launch one ``faro train`` run of ``config`` (or of the settings ``kw``, see :func:`launch_config`);
    return its run id. The validated config goes to the process as ``launch_config.json`` in the run directory
    (read with ``--config``); ``extra`` flags are appended and override it.

    ``target`` (:data:`faro_core.train.ray_launch.TARGETS`): ``local-cpu`` (this machine, no GPU even in full
    mode), ``local-gpu`` (full mode on this machine's CUDA device, bf16 autocast; :class:`FaroError` without
    one) or ``ray`` (the cluster at ``RAY_ADDRESS``; asks for ``num_gpus``, default 1 in full mode, 0 in head
    mode). The run store must then be on a path every node sees.
    """
    from faro_core.train.ray_launch import TARGETS

    if target not in TARGETS:
        raise FaroError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    cfg = launch_config(config, **kw)
    env: dict[str, str] = {}
    if target == "local-gpu":
        import torch

        if not torch.cuda.is_available():
            raise FaroError("target local-gpu: this machine has no CUDA device; choose local-cpu or ray")
        cfg = FaroConfig(**{**cfg.to_dict(), "mode": "full"})
    elif target == "local-cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU run stays on the CPU, whatever the machine has
    if target == "ray" and not os.environ.get("RAY_ADDRESS"):
        raise FaroError("target ray needs RAY_ADDRESS (the head node's address, e.g. 127.0.0.1:6379)")
    prefix = cfg.sweep or ("faro-" + "+".join(cfg.constraints) if cfg.active_constraints else "bt")
    run_id = run_id or new_run_id(prefix)
    root = store.root.resolve() if target == "ray" else store.root
    argv = train_argv(run_id, str(root), str(root / validate_run_id(run_id) / CONFIG_FILE), extra)
    if target == "ray":
        gpus = "auto" if num_gpus is None else f"{float(num_gpus):g}"
        argv = [sys.executable, "-m", "faro_core.train.ray_launch", str(root), run_id, cfg.mode, gpus, "--",
                *argv[3:]]
    launch(store, argv, run_id, env=env, target=target, files={CONFIG_FILE: cfg.stored_dict()})
    return run_id


def launch_sweep(store: RunStore, argv: Sequence[str], ids: Sequence[str]) -> list[str]:
    """Start a ``faro sweep`` (one batched job: one process trains every member) detached; each member's run
    directory gets a ``launch.json`` naming the process and the batch, so the queue shows every member with
    its own progress and :func:`cancel` stops one member without stopping the others. Members already done
    are left as they are (the sweep skips them). ``ids``: the members' run ids (the grid's; built by
    :func:`faro_core.studies.sweep.launch_spec`). Returns them."""
    ids = list(ids)
    todo = [r for r in ids if not (store.has(r) and store.get(r).status == "done")]
    for rid in todo:
        path = store.path(rid)
        if (path / LAUNCH_FILE).exists() and store.has(rid) and store.get(rid).status in ("queued", "running"):
            raise RunError(f"run {rid!r} is already training in {store.root}")
    if not todo:
        return ids
    first = store.path(todo[0])
    first.mkdir(parents=True, exist_ok=True)
    log = open(first / LOG_FILE, "ab")
    try:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                                close_fds=True)  # head mode trains on the CPU
    finally:
        log.close()
    info = {"pid": proc.pid, "pgid": proc.pid, "argv": list(argv), "time": time.time(), "batch": todo,
            "log": todo[0]}
    for rid in todo:
        store.path(rid).mkdir(parents=True, exist_ok=True)
        write_json(store.path(rid) / LAUNCH_FILE, info)
    _CHILDREN[todo[0]] = proc
    return ids


def _reap() -> None:
    for rid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            _CHILDREN.pop(rid, None)


def launch_info(store: RunStore, run_id: str) -> dict[str, Any] | None:
    """``launch.json`` of a run, or None when it was not started by the launcher."""
    p = store.path(run_id) / LAUNCH_FILE
    return read_json(p) if p.exists() else None


def queue(store: RunStore) -> list[dict[str, Any]]:
    """Launched runs, newest first: run_id, status (``starting`` before the config exists), progress, pid."""
    _reap()
    rows = []
    if not store.root.exists():
        return rows
    for p in store.root.iterdir():
        if not (p / LAUNCH_FILE).exists():
            continue
        info = read_json(p / LAUNCH_FILE)
        run = Run(p.name, p)
        alive = _pid_alive(int(info.get("pid", -1)))
        if run.exists():
            status = run.status
            prog = run.progress()
        else:
            status = "starting" if alive else "failed"
            prog = {"step": 0, "total_steps": 0, "fraction": 0.0}
        err = run.raw_status().get("error") if run.exists() else None
        if status == "failed" and not err:
            err = log_tail(store, p.name)
        rows.append({"run_id": p.name, "status": status, "fraction": float(prog.get("fraction") or 0.0),
                     "step": prog.get("step", 0), "total_steps": prog.get("total_steps", 0),
                     "pid": info.get("pid"), "alive": alive, "launched": info.get("time", 0.0), "error": err,
                     "target": info.get("target", "local-cpu"), "placement": read_json(p / "placement.json")
                     if (p / "placement.json").exists() else None})
    return sorted(rows, key=lambda r: -r["launched"])


def log_tail(store: RunStore, run_id: str, lines: int = 5) -> str:
    """Last lines of a launched run's ``launch.log`` (what to show when it failed)."""
    info = launch_info(store, run_id) or {}
    p = store.path(str(info.get("log") or run_id)) / LOG_FILE  # a batch's members share one log
    if not p.exists():
        return ""
    text = p.read_text(errors="replace").strip().splitlines()
    return "\n".join(text[-lines:])


def cancel(store: RunStore, run_id: str, wait_s: float = 10.0) -> str:
    """Stop a launched run and mark it ``interrupted``; returns its status. A run of its own process: SIGTERM
    to the process group. A member of a batch (a launched sweep): a cancel request, which the batch honours
    at its next step (that member stops, the others go on; a member whose batch has not started yet is
    stopped before its first step)."""
    info = launch_info(store, run_id)
    if info is None:
        raise RunError(f"run {run_id!r} was not started from the launcher; stop it where it runs")
    pid = int(info["pid"])
    t_cancel = time.time()
    run = Run(run_id, store.path(run_id))
    if info.get("batch") and _pid_alive(pid):
        run.request_cancel()
        deadline = time.time() + wait_s
        while time.time() < deadline and _pid_alive(pid) and run.exists() and \
                run.raw_status().get("status") in ("queued", "running"):
            time.sleep(0.1)
        return run.status if run.exists() and run.raw_status().get("status") not in ("queued", "running") \
            else "interrupted"
    if _pid_alive(pid):
        try:
            os.killpg(int(info.get("pgid", pid)), signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.time() + wait_s
        while time.time() < deadline and _pid_alive(pid):
            proc = _CHILDREN.get(run_id)
            if proc is not None:
                proc.poll()
            time.sleep(0.1)
        if _pid_alive(pid):
            try:
                os.killpg(int(info.get("pgid", pid)), signal.SIGKILL)
            except ProcessLookupError:
                pass
    _reap()
    run = Run(run_id, store.path(run_id))
    if not run.exists():
        store.path(run_id).mkdir(parents=True, exist_ok=True)
        write_json(run.file("config.json"), {"run_id": run_id, "cancelled_before_start": True})
    st = run.raw_status()
    # a run that ended while being cancelled (a Ray worker stopped by the task's cancel can record its stop as a
    # failure) was stopped by the user: it reads interrupted, and resumes from its checkpoint
    stopped_by_us = st.get("status") == "failed" and float(st.get("finished") or 0) >= t_cancel
    if st.get("status") in ("queued", "running") or stopped_by_us:
        run.set_status("interrupted", error="cancelled by the user (SIGTERM)")
    return run.status


def wait(store: RunStore, run_id: str, timeout_s: float = 300.0, poll_s: float = 0.5) -> str:
    """Block until a launched run leaves queued/running/starting; return its status."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = {r["run_id"]: r for r in queue(store)}
        row = rows.get(run_id)
        if row is None:
            raise FaroError(f"run {run_id!r} was not launched in {store.root}")
        if row["status"] not in ("starting", "queued", "running") and not row["alive"]:
            return row["status"]
        time.sleep(poll_s)
    raise FaroError(f"run {run_id!r} did not finish within {timeout_s:.0f} s")
