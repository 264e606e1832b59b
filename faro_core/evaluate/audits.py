"""Audits of a reward model on outside benchmarks (DESIGN §7), cached in the run directory (``audit.json``).

- CrowS-Pairs stereotype preference: share of minimal pairs where r(sent_more) > r(sent_less); 0.5 is
  unbiased. Overall and per bias type, with a seeded BCa bootstrap 95% interval (pairs are independent items).
  The loader stores ``chosen = sent_less``, ``rejected = sent_more``, so the rate is P(r_rejected > r_chosen).
- HH-RLHF pairwise accuracy (quality retention on data with no group skew): share of pairs with
  r(chosen) > r(rejected), with a bootstrap interval. ``hh_limit`` scores a seeded random subset
  (the full test splits are ~4.7k long dialogues: minutes of CPU encoding the first time).

The cache key is (path, limit, seed, model file mtime): a retrained model is audited afresh.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from faro_core.evaluate.metrics import scores_for_data
from faro_core.store.runs import Run

N_BOOT = 1000


def rate_with_interval(x: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Mean of a 0/1 vector with its BCa bootstrap interval: ``{"value", "lo", "hi", "method", "n"}``
    (:func:`faro_core.intervals.mean_interval`)."""
    from faro_core.intervals import mean_interval

    return mean_interval(x, n_boot=n_boot, seed=seed, level=level)


def _model_stamp(run: Run) -> float:
    p = run.file("model.safetensors")
    return os.path.getmtime(p) if p.exists() else 0.0


def crows_audit(run: Run, path: str | Path, seed: int = 0) -> dict[str, Any]:
    """Stereotype-preference rate of the run's reward model on CrowS-Pairs, overall and per bias type."""
    df = scores_for_data(run, str(path), format="crows", seed=seed)
    more = (df["r_rejected"].to_numpy() > df["r_chosen"].to_numpy()).astype(float)
    by_type = {str(t): rate_with_interval(more[(df["category"] == t).to_numpy()], seed=seed)
               for t in sorted(df["category"].unique())}
    return {"stereotype_rate": rate_with_interval(more, seed=seed), "by_bias_type": by_type,
            "path": str(path), "unbiased": 0.5}


def hh_audit(run: Run, path: str | Path, limit: int | None = 500, seed: int = 0) -> dict[str, Any]:
    """Pairwise accuracy of the run's reward model on HH-RLHF (a seeded subset of ``limit`` pairs)."""
    df = scores_for_data(run, str(path), format="hh", limit=limit, seed=seed)
    correct = (df["r_chosen"].to_numpy() > df["r_rejected"].to_numpy()).astype(float)
    by = {str(c): rate_with_interval(correct[(df["category"] == c).to_numpy()], seed=seed)
          for c in sorted(df["category"].unique())}
    return {"accuracy": rate_with_interval(correct, seed=seed), "by_subset": by, "path": str(path),
            "limit": limit}


def audit_run(run: Run, crows: str | Path | None = None, hh: str | Path | None = None, hh_limit: int | None = 500,
              seed: int = 0, refresh: bool = False, twins: str | Path | None = None) -> dict[str, Any]:
    """Run (or read from ``audit.json``) the requested audits; returns ``{"crows": ..., "hh": ..., "twins": ...}``.

    ``twins``: a twin table or WinoBias folder (:mod:`faro_core.evaluate.twin_audit`)."""
    from faro_core.evaluate.twin_audit import twin_audit
    cached = run.read("audit.json", {}) or {}
    stamp = _model_stamp(run)
    out: dict[str, Any] = {"run_id": run.run_id}
    for name, path, fn, key in (
        ("crows", crows, lambda p: crows_audit(run, p, seed), [str(crows), seed, stamp]),
        ("hh", hh, lambda p: hh_audit(run, p, hh_limit, seed), [str(hh), hh_limit, seed, stamp]),
        ("twins", twins, lambda p: twin_audit(run, p, seed), [str(twins), seed, stamp]),
    ):
        if path is None:
            if name in cached:
                out[name] = cached[name]
            continue
        prev = cached.get(name)
        if prev is not None and prev.get("key") == key and not refresh:
            out[name] = {**prev, "cached": True}
            continue
        t0 = time.perf_counter()
        res = fn(path)
        res.update(key=key, seconds=round(time.perf_counter() - t0, 3))
        out[name] = res
        cached[name] = res
    run.write("audit.json", {**cached, "run_id": run.run_id})
    return out
