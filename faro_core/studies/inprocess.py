"""In-process sweep: many head-mode trainings that share one data load, one split and one feature read.

:func:`faro_core.sweep.run_sweep` starts every run from scratch (load and skew the data, split it, build
twins, read the feature cache's shards) in a fresh worker process, then bootstraps and certifies it. For
small head-mode runs those fixed costs are a large part of a run. :func:`run_inprocess` trains the same grid
(same configs, same deterministic run ids, same run store files, same trainer code path) in this process,
memoizing per data configuration what does not depend on the run:

- :func:`faro_core.train.trainer.load_training_data` (data loading, skew, split, twins, group index), and
- :class:`faro_core.models.features.FeatureCache` instances per (backbone, root, max length), so shards are
  read once, and their ``encode`` results per list of texts, so texts are hashed once.

Evaluation with bootstrap intervals and certificates is optional (``evaluate=True`` runs what
:func:`faro_core.sweep.run_job` does); without it the sweep table holds the point estimates that the trainer
writes to ``metrics.json`` (test split), which is what a Pareto front needs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from faro_core.runs import RunStore
from faro_core.sweep import KINDS, SweepSpec, config_columns, grid, run_id_for, run_job
from faro_core.train.config import FaroConfig

DATA_KEYS = ("data", "format", "group", "strata", "groups", "skew", "data_seed", "val_frac", "test_frac")


@contextlib.contextmanager
def shared_inputs() -> Iterator[dict[str, Any]]:
    """Within the block, data loading and feature caches are memoized per data configuration.

    Yields the memo (``{"data": {...}, "features": {...}}``) so callers can see what was shared. The frame
    handed to each run is a shallow copy, so a run that adds a column does not change the next run's.
    """
    import faro_core.models.features as features
    import faro_core.train.trainer as trainer

    memo: dict[str, dict[Any, Any]] = {"data": {}, "features": {}}
    load, cache_cls = trainer.load_training_data, features.FeatureCache

    def load_shared(config: FaroConfig) -> Any:
        key = tuple(str(getattr(config, k)) for k in DATA_KEYS)
        if key not in memo["data"]:
            memo["data"][key] = load(config)
        data, df, index = memo["data"][key]
        return data, df.copy(deep=False), index

    def cache_shared(backbone: str | None = None, root: str | Path | None = None, max_length: int = 256,
                     **kw: Any) -> Any:
        key = (str(backbone), str(root), int(max_length), str(kw.get("device")))
        if key not in memo["features"]:
            memo["features"][key] = cache_cls(backbone, root=root, max_length=max_length, **kw)
        fc = memo["features"][key]
        fc.progress = kw.get("progress", fc.progress)
        if not getattr(fc, "_shared_encode", False):
            fc.encode, fc._shared_encode = _memo_encode(fc), True
        return fc

    trainer.load_training_data, features.FeatureCache = load_shared, cache_shared
    try:
        yield memo
    finally:
        trainer.load_training_data, features.FeatureCache = load, cache_cls


def _memo_encode(fc: Any) -> Callable[..., Any]:
    """``fc.encode`` remembering its results for the texts of this sweep: every run of a data configuration
    asks for the same texts, and hashing them into cache keys cost ~55 ms per run on one BBQ category. Keyed by
    the texts themselves (the runs' frames share their string objects, so hashing and comparing is cheap)."""
    raw, seen = fc.encode, {}

    def encode(prompts: Any, responses: Any, *args: Any, **kw: Any) -> Any:
        key = (tuple(prompts), tuple(responses), args, tuple(sorted(kw.items())))
        if key in seen:
            fc.last_encoded = 0
            return seen[key]
        seen[key] = raw(prompts, responses, *args, **kw)
        return seen[key]

    return encode


def metrics_row(run: Any) -> dict[str, Any]:
    """A sweep-table row from a run's config and ``metrics.json`` (test-split point estimates)."""
    m = run.read("metrics.json", {}) or {}
    test = m.get("test", {}) or {}
    row: dict[str, Any] = {**config_columns(run), "accuracy": test.get("accuracy", math.nan),
                           "gold_accuracy": test.get("gold_accuracy", math.nan)}
    for k in KINDS:
        row[f"violation_{k}"] = (test.get("violation") or {}).get(k, math.nan)
    return row


def train_inprocess(config: FaroConfig, store: RunStore, evaluate: bool = False, n_boot: int = 100,
                    delta: float = 0.05, certify_epsilon: float = 0.05) -> dict[str, Any]:
    """Train one config (skipped if its run is done) in this process; returns its table row.

    Call inside :func:`shared_inputs` to share data and features between calls.
    """
    from faro_core.train import train

    t0 = time.perf_counter()
    if evaluate:
        row = run_job(config.to_dict(), str(store.root), n_boot=n_boot, delta=delta,
                      certify_epsilon=certify_epsilon)
        row["job_seconds"] = round(time.perf_counter() - t0, 3)
        return row
    rid = run_id_for(config)
    skipped = store.has(rid) and store.get(rid).status == "done"
    if skipped:
        run = store.get(rid)
    else:
        if store.has(rid):
            import shutil

            shutil.rmtree(store.path(rid))
        run = train(config, store, run_id=rid, progress=False)
    row = metrics_row(run)
    row.update(skipped=skipped, job_seconds=round(time.perf_counter() - t0, 3))
    return row


def run_inprocess(spec: SweepSpec, runs_dir: str | Path, evaluate: bool = False,
                  on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep's grid in this process with shared inputs; returns ``{"table", "seconds", ...}``.

    Same run ids and run files as :func:`faro_core.sweep.run_sweep`, so either can resume the other's runs.
    """
    t0 = time.perf_counter()
    store = RunStore(runs_dir)
    rows = []
    with shared_inputs():
        for config in grid(spec):
            rows.append(train_inprocess(config, store, evaluate=evaluate, n_boot=spec.n_boot, delta=spec.delta,
                                        certify_epsilon=spec.certify_epsilon))
            if on_done:
                on_done(rows[-1])
    table = pd.DataFrame(rows)
    return {"name": spec.name, "runs": len(table), "skipped": int(table["skipped"].sum()) if len(table) else 0,
            "seconds": round(time.perf_counter() - t0, 3), "table": table}
