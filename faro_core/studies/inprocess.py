"""In-process sweep: many head-mode trainings that share one data load, one split and one feature read.

:func:`faro_core.studies.sweep.run_sweep` starts every run from scratch (load and skew the data, split it,
build twins, read the feature cache's shards) in a fresh worker process, then bootstraps and certifies it.
For small head-mode runs those fixed costs are a large part of a run. :func:`run_inprocess` trains the same
grid (same configs, same deterministic run ids, same run store files, same trainer code path) in this
process, handing every run one :class:`SharedInputs`, which memoizes per data configuration what does not
depend on the run:

- the loaded training data (data loading, skew, split, twins, group index), and
- the feature caches per (backbone, root, max length), so shards are read once, and their ``encode``
  results per list of texts, so texts are hashed once.

Evaluation with bootstrap intervals and certificates is optional (``evaluate=True`` does what
:func:`faro_core.studies.sweep.run_job` does); without it the sweep table holds the point estimates that the
trainer writes to ``metrics.json`` (test split), which is what a Pareto front needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from faro_core.models.features import FeatureCache
from faro_core.results.table import metrics_row
from faro_core.store.runs import RunStore
from faro_core.studies.grid import SweepSpec, grid
from faro_core.studies.sweep import run_job, train_or_resume
from faro_core.train.config import FaroConfig
from faro_core.train.inputs import TrainInputs, load_training_data

DATA_KEYS = ("data", "format", "group", "strata", "groups", "skew", "data_seed", "split_by", "val_frac", "test_frac")


class SharedInputs(TrainInputs):
    """Training inputs memoized per data configuration (:data:`DATA_KEYS`) and per feature cache.

    ``memo`` (``{"data": {...}, "features": {...}}``) shows what was shared. The frame handed to each run is
    a shallow copy, so a run that adds a column does not change the next run's.
    """

    def __init__(self) -> None:
        self.memo: dict[str, dict[Any, Any]] = {"data": {}, "features": {}}
        super().__init__(load=self._load, feature_cache=self._feature_cache)

    def _load(self, config: FaroConfig) -> Any:
        key = tuple(str(getattr(config, k)) for k in DATA_KEYS)
        if key not in self.memo["data"]:
            self.memo["data"][key] = load_training_data(config)
        data, df, index = self.memo["data"][key]
        return data, df.copy(deep=False), index

    def _feature_cache(self, backbone: str | None = None, root: str | Path | None = None, max_length: int = 256,
                       **kw: Any) -> Any:
        key = (str(backbone), str(root), int(max_length), str(kw.get("device")))
        if key not in self.memo["features"]:
            fc = FeatureCache(backbone, root=root, max_length=max_length, **kw)
            fc.encode = _memo_encode(fc)
            self.memo["features"][key] = fc
        fc = self.memo["features"][key]
        fc.progress = kw.get("progress", fc.progress)
        return fc


def _memo_encode(fc: Any) -> Callable[..., Any]:
    """``fc.encode`` remembering its results for the texts of this sweep: every run of a data configuration
    asks for the same texts, so their cache keys are hashed once per sweep (docs/TRAINING.md). Keyed by
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


def train_inprocess(config: FaroConfig, store: RunStore, inputs: TrainInputs | None = None, evaluate: bool = False,
                    n_boot: int = 100, delta: float = 0.05, certify_epsilon: float = 0.05) -> dict[str, Any]:
    """Train one config (skipped if its run is done) in this process; returns its table row.

    Pass the same :class:`SharedInputs` to every call to share data and features between them.
    """
    t0 = time.perf_counter()
    if evaluate:
        row = run_job(config.to_dict(), str(store.root), n_boot=n_boot, delta=delta,
                      certify_epsilon=certify_epsilon, inputs=inputs)
    else:
        run, skipped = train_or_resume(config, store, inputs)
        row = {**metrics_row(run), "skipped": skipped}
    row["job_seconds"] = round(time.perf_counter() - t0, 3)
    return row


def run_inprocess(spec: SweepSpec, runs_dir: str | Path, evaluate: bool = False,
                  on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep's grid in this process with shared inputs; returns ``{"table", "seconds", ...}``.

    Same run ids and run files as :func:`faro_core.studies.sweep.run_sweep`, so either can resume the other's
    runs.
    """
    t0 = time.perf_counter()
    store = RunStore(runs_dir)
    inputs = SharedInputs()
    rows = []
    for config in grid(spec):
        rows.append(train_inprocess(config, store, inputs, evaluate=evaluate, n_boot=spec.n_boot, delta=spec.delta,
                                    certify_epsilon=spec.certify_epsilon))
        if on_done:
            on_done(rows[-1])
    table = pd.DataFrame(rows)
    return {"name": spec.name, "runs": len(table), "skipped": int(table["skipped"].sum()) if len(table) else 0,
            "seconds": round(time.perf_counter() - t0, 3), "table": table}
