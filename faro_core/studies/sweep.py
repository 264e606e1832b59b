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
from faro_core.results.table import aggregate, markdown_table, table_row
from faro_core.store.runs import RUN_ID_RE, Run, RunStore
from faro_core.studies.executors import EXECUTORS
from faro_core.studies.grid import SweepSpec, grid, run_id_for
from faro_core.train.config import FaroConfig
from faro_core.train.inputs import TrainInputs
from faro_core.train.loop import train

SWEEPS_DIR = "_sweeps"


def train_or_resume(config: FaroConfig, store: RunStore, inputs: TrainInputs | None = None) -> tuple[Run, bool]:
    """(run, was_done): the run of ``config`` under its deterministic id, trained only as far as needed.

    Done: returned as is. Interrupted with a checkpoint: resumed. Anything else (failed, queued, interrupted
    before its first checkpoint): its directory is removed and it is trained from scratch.
    """
    rid = run_id_for(config)
    if store.has(rid):
        run = store.get(rid)
        if run.status == "done":
            return run, True
        if run.status == "interrupted" and run.file("checkpoint").exists():
            return train(None, store, run_id=rid, resume=True, progress=False, inputs=inputs), False
        shutil.rmtree(store.path(rid))
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


def run_sweep(spec: SweepSpec, runs_dir: str | Path, workers: int = 2, executor: str = "local",
              on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; writes the table and Pareto summary; returns ``{"table", "pareto", "dir", ...}``."""
    if executor not in EXECUTORS:
        raise FaroError(f"unknown executor {executor!r}; choose local or ray")
    check_sweep_name(spec.name)
    t0 = time.perf_counter()
    configs = grid(spec)
    jobs = [c.to_dict() for c in configs]
    kw = {"runs_dir": str(runs_dir), "n_boot": spec.n_boot, "delta": spec.delta,
          "certify_epsilon": spec.certify_epsilon}
    rows = EXECUTORS[executor](run_job, jobs, kw, max(1, int(workers)), on_done,
                               lambda job, exc: failed_row(job, str(runs_dir), exc))
    order = {run_id_for(c): i for i, c in enumerate(configs)}
    table = pd.DataFrame(rows).sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)
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
