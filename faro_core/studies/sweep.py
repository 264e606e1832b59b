"""Sweeps: a grid of trainings (constraint kind x epsilon x seed, plus baselines) run into one run store,
then evaluated, certified, tabulated, with the Pareto front and its hypervolume.

Running the same sweep again skips every run that is already done (and evaluated), resumes interrupted ones
from their checkpoint and retrains failed ones (:func:`train_or_resume`, the one place that rule lives).
The grid and run ids: :mod:`faro_core.studies.grid`; executors: :mod:`faro_core.studies.executors`; the
in-process variant that shares inputs between runs: :mod:`faro_core.studies.inprocess`.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from faro_core.errors import FaroError
from faro_core.evaluate.certify import certify_run
from faro_core.evaluate.metrics import evaluate_run
from faro_core.fairness.kinds import KINDS
from faro_core.io import write_json, write_parquet
from faro_core.results.pareto import pareto_summary
from faro_core.results.table import add_paired_vs_bt, aggregate, markdown_table, table_row
from faro_core.store.runs import CANCEL_FILE, RUN_ID_RE, Run, RunStore
from faro_core.studies.executors import EXECUTORS
from faro_core.studies.grid import SweepSpec, grid, run_id_for, spec_flags
from faro_core.train.checkpoint import checkpoint_step
from faro_core.train.config import FaroConfig
from faro_core.train.inputs import TrainInputs
from faro_core.train.loop import train

SWEEPS_DIR = "_sweeps"


def plan_run(config: FaroConfig, store: RunStore, run_id: str | None = None) -> str:
    """What a sweep does with the run of ``config`` (its deterministic id, or ``run_id`` where the caller names
    its runs): ``"done"`` (kept as is), ``"resume"`` (interrupted with a checkpoint) or ``"fresh"`` (anything
    else -- failed, queued, interrupted before its first checkpoint -- its directory removed: trained from
    scratch). The one place that rule lives."""
    rid = run_id or run_id_for(config)
    if not store.has(rid):
        return "fresh"
    run = store.get(rid)
    if run.status == "done":
        return "done"
    if run.status == "interrupted" and run.file("checkpoint").exists():
        return "resume"
    shutil.rmtree(store.path(rid))
    return "fresh"


def train_or_resume(config: FaroConfig, store: RunStore, inputs: TrainInputs | None = None,
                    run_id: str | None = None) -> tuple[Run, bool]:
    """(run, was_done): the run of ``config`` under its deterministic id (or ``run_id``), trained only as far
    as needed (:func:`plan_run`)."""
    rid = run_id or run_id_for(config)
    action = plan_run(config, store, rid)
    if action == "done":
        return store.get(rid), True
    if action == "resume":
        return train(None, store, run_id=rid, resume=True, progress=False, inputs=inputs), False
    return train(config, store, run_id=rid, progress=False, inputs=inputs), False


def evaluate_and_certify(run: Run, config: FaroConfig, n_boot: int = 100, delta: float = 0.05,
                         certify_epsilon: float = 0.05) -> None:
    """``eval.json`` (bootstrap intervals), ``certificate.json`` (the run's own kinds at its epsilon, or every
    kind at ``certify_epsilon``) and ``certificates_by_kind.json`` (each kind at ``certify_epsilon``)."""
    evaluate_run(run, n_boot=n_boot)
    kinds = list(config.constraints) or list(KINDS)
    eps = config.epsilon if math.isfinite(config.epsilon) else certify_epsilon
    certify_run(run, delta=delta, epsilon=eps, kinds=kinds)
    run.write("certificates_by_kind.json", {
        k: certify_run(run, delta=delta, epsilon=certify_epsilon, kinds=[k], write=False) for k in KINDS})


def run_job(config_dict: dict[str, Any], runs_dir: str, n_boot: int = 100, delta: float = 0.05,
            certify_epsilon: float = 0.05, inputs: TrainInputs | None = None) -> dict[str, Any]:
    """Train (unless done), evaluate and certify one config; returns its sweep-table row.

    ``skipped`` in the row is True when the run was already done and evaluated (nothing recomputed).
    """
    torch.set_num_threads(int(os.environ.get("FARO_WORKER_THREADS", "1")))
    store = RunStore(runs_dir)
    config = FaroConfig.from_dict(config_dict)
    t0 = time.perf_counter()
    run, was_done = train_or_resume(config, store, inputs)
    skipped = was_done and run.file("eval.json").exists() and run.file("certificate.json").exists()
    if not skipped:
        evaluate_and_certify(run, config, n_boot=n_boot, delta=delta, certify_epsilon=certify_epsilon)
    row = table_row(run)
    row.update(skipped=skipped, job_seconds=round(time.perf_counter() - t0, 3))
    return row


def run_batch_job(config_dicts: list[dict[str, Any]], runs_dir: str, n_boot: int = 100, delta: float = 0.05,
                  certify_epsilon: float = 0.05, inputs: TrainInputs | None = None, evaluate: bool = True,
                  memory_mb: float | None = None) -> list[dict[str, Any]]:
    """:func:`run_job` for the members of one batch (configs of one
    :func:`~faro_core.train.batched.batch_key`), trained together by
    :func:`~faro_core.train.batched.train_batch`; returns their sweep-table rows.

    Each member follows :func:`plan_run`; a member whose cancel was requested before its batch began is marked
    interrupted and not trained. Members resuming from different checkpoint steps train as separate batches (a
    batch steps in lockstep), and a batch larger than ``memory_mb`` (default
    :data:`~faro_core.train.batched.DEFAULT_MEMORY_MB`) is split (:func:`~faro_core.train.batched.plan_batches`).
    ``evaluate=False`` skips the bootstrap and certificates (rows from ``metrics.json``, as the in-process
    sweep's).
    """
    from faro_core.results.table import metrics_row
    from faro_core.train.batched import DEFAULT_MEMORY_MB, plan_batches, train_batch

    torch.set_num_threads(int(os.environ.get("FARO_WORKER_THREADS", "1")))
    inputs = inputs or TrainInputs()
    store = RunStore(runs_dir)
    configs = [FaroConfig.from_dict(d) for d in config_dicts]
    t0 = time.perf_counter()
    was_done, by_start = {}, {}
    rid_of = {id(c): run_id_for(c) for c in configs}  # a run id hashes the resolved config: once per member
    for c in configs:
        rid = rid_of[id(c)]
        action = plan_run(c, store, run_id=rid)
        was_done[rid] = action == "done"
        if was_done[rid]:
            continue
        if (store.path(rid) / CANCEL_FILE).exists():  # cancelled before its batch began: it does not train
            run = store.get(rid) if store.has(rid) else store.create(c.resolved().stored_dict(), run_id=rid)
            run.set_status("interrupted", error="cancelled by the user")
            run.clear_cancel()
            continue
        start = checkpoint_step(store.get(rid)) if action == "resume" else 0
        by_start.setdefault(start, []).append(c)
    n_pairs = len(inputs.load(configs[0].resolved())[1]) if by_start else 0
    for _, group in sorted(by_start.items()):
        batches, _ = plan_batches(group, memory_mb or DEFAULT_MEMORY_MB, n_pairs=n_pairs)
        for batch in batches:
            train_batch(batch, store, [rid_of[id(c)] for c in batch], resume=True, progress=sys.stderr.isatty(),
                        inputs=inputs)
    rows = []
    for c in configs:
        rid = rid_of[id(c)]
        run = store.get(rid)
        if not evaluate:
            row = metrics_row(run)
            row["skipped"] = was_done[rid]
        else:
            skipped = was_done[rid] and run.file("eval.json").exists() and run.file("certificate.json").exists()
            if not skipped and run.status == "done":
                evaluate_and_certify(run, c, n_boot=n_boot, delta=delta, certify_epsilon=certify_epsilon)
            row = table_row(run)
            row["skipped"] = skipped
        row["job_seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
    return rows


def run_entry(job: dict[str, Any], **kw: Any) -> dict[str, Any] | list[dict[str, Any]]:
    """One executor job: ``{"batch": [config dicts]}`` (:func:`run_batch_job`, its members' rows) or one config
    dict (:func:`run_job`, its row)."""
    if "batch" in job:
        return run_batch_job(job["batch"], **kw)
    kw.pop("memory_mb", None)
    return run_job(job, **kw)


ENGINES = ("batched", "serial")


def sweep_jobs(configs: list[FaroConfig], engine: str = "batched") -> list[dict[str, Any]]:
    """Executor jobs for a grid: with ``engine="batched"`` one job per group of configs that can train as one
    batch (:func:`~faro_core.train.batched.batch_key`; a group of one is an ordinary run), every other config
    (full mode, methods whose registry entry does not batch) its own job; ``"serial"``: one job per config."""
    if engine not in ENGINES:
        raise FaroError(f"unknown engine {engine!r}; choose batched or serial")
    if engine == "serial":
        return [c.to_dict() for c in configs]
    from faro_core.train.batched import batch_key, batchable

    groups: dict[Any, list[FaroConfig]] = {}
    jobs: list[dict[str, Any]] = []
    for c in configs:
        if batchable(c):
            groups.setdefault(batch_key(c), []).append(c)
        else:
            jobs.append(c.to_dict())
    return [{"batch": [c.to_dict() for c in g]} if len(g) > 1 else g[0].to_dict() for g in groups.values()] + jobs


def failed_row(job: dict[str, Any], runs_dir: str, exc: BaseException) -> dict[str, Any]:
    """The sweep-table row of a job whose worker died: what the store says of its run, and the error."""
    rid = run_id_for(FaroConfig.from_dict(job))
    store = RunStore(runs_dir)
    row: dict[str, Any] = table_row(store.get(rid)) if store.has(rid) else {"run_id": rid, "status": "failed"}
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    row.update(skipped=False, job_seconds=float("nan"), error=f"{type(exc).__name__}: {first}")
    return row


def check_sweep_name(name: str) -> None:
    """A sweep's name names a folder under the store: letters, digits, '.', '_' and '-' only."""
    if not RUN_ID_RE.match(str(name)) or ".." in str(name):
        raise FaroError(f"invalid sweep name {name!r}: use letters, digits, '.', '_' and '-' only "
                        f"(no '/' or '..')")



SWEEP_CONFIG_FILE = "base_config.json"


def sweep_argv(spec: SweepSpec, runs_dir: str | Path) -> list[str]:
    """The ``faro sweep`` command line that trains ``spec`` (batched engine). ``spec.base`` is written to
    ``RUNS_DIR/_sweeps/NAME/base_config.json`` and read with ``--config``; the grid is spelled by the flags
    generated from ``SweepSpec``'s fields (:func:`~faro_core.studies.grid.spec_flags`), so the command reads
    back exactly ``spec``."""
    check_sweep_name(spec.name)
    grid(spec)  # a bad grid is refused before anything is written
    folder = Path(runs_dir) / SWEEPS_DIR / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / SWEEP_CONFIG_FILE, spec.base.stored_dict())
    return [sys.executable, "-m", "faro_core", "sweep", "--config", str(folder / SWEEP_CONFIG_FILE), "--runs-dir",
            str(runs_dir), *spec_flags(spec), "--engine", "batched", "--quiet", "--json"]


def launch_spec(store: RunStore, spec: SweepSpec) -> list[str]:
    """Start ``spec`` as one background ``faro sweep`` process (:func:`sweep_argv`; one batched job trains
    every member, each still its own run: :func:`faro_core.train.launch.launch_sweep`). Returns the members'
    run ids, computed from the grid itself."""
    from faro_core.train.launch import launch_sweep

    ids = [run_id_for(c) for c in grid(spec)]
    return launch_sweep(store, sweep_argv(spec, store.root), ids)

def run_sweep(spec: SweepSpec, runs_dir: str | Path, workers: int = 2, executor: str = "local",
              on_done: Callable[[dict[str, Any]], None] | None = None, engine: str = "batched",
              memory_mb: float | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; writes the table and Pareto summary; returns ``{"table", "pareto", "dir", ...}``.

    ``engine``: ``"batched"`` (default) trains the head-mode members that can share a batch as one batched
    model (:mod:`faro_core.train.batched`; ``memory_mb`` bounds each batch's host memory), ``"serial"`` one run
    per job. Either writes the same runs under the same ids, so each resumes the other's sweeps."""
    if executor not in EXECUTORS:
        raise FaroError(f"unknown executor {executor!r}; choose local or ray")
    check_sweep_name(spec.name)
    t0 = time.perf_counter()
    configs = grid(spec)
    jobs = sweep_jobs(configs, engine)
    kw = {"runs_dir": str(runs_dir), "n_boot": spec.n_boot, "delta": spec.delta,
          "certify_epsilon": spec.certify_epsilon, "memory_mb": memory_mb}
    rows = EXECUTORS[executor](run_entry, jobs, kw, max(1, int(workers)), on_done,
                               lambda job, exc: failed_row(job, str(runs_dir), exc))
    order = {run_id_for(c): i for i, c in enumerate(configs)}
    table = pd.DataFrame(rows).sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)
    table = add_paired_vs_bt(table, RunStore(runs_dir))
    out_dir = Path(runs_dir) / SWEEPS_DIR / spec.name
    pareto = pareto_summary(table)
    write_sweep(table, pareto, out_dir)
    return {"name": spec.name, "dir": str(out_dir), "runs": len(table), "skipped": int(table["skipped"].sum()),
            "seconds": round(time.perf_counter() - t0, 3), "pareto": pareto, "table": table}


def write_sweep(table: pd.DataFrame, pareto: dict[str, Any], out_dir: Path) -> None:
    """sweep.parquet, sweep.csv, sweep.md (seed-aggregated) and pareto.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t = table.copy()
    for c in t.columns:
        if t[c].dtype == object:
            t[c] = t[c].map(lambda v: None if v is None else str(v))
    write_parquet(out_dir / "sweep.parquet", t)
    t.to_csv(out_dir / "sweep.csv", index=False)
    write_json(out_dir / "pareto.json", pareto)
    (out_dir / "sweep.md").write_text(markdown_table(aggregate(table)) + "\n")
