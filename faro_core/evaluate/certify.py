"""Fairness certificates on held-out data (DESIGN §6; derivation in docs/EVALUATION.md).

For each one-sided constraint j (a cell of DP / EO / CF, see :mod:`faro_core.fairness.constraints`) we report the
empirical violation g_j (the constraint objects' own strict value), a one-sided upper confidence bound
U_j with P(g*_j <= U_j for all j) >= 1 - delta, the slack eps - U_j, and the group size driving U_j.
The m one-sided constraints are union-bounded: each bound holds at level delta' = delta / m.

- DP, EO (a group's rate minus its stratum's rate, the stratum including the group):
  with n_a members of the group, n_o = n_ref - n_a others, w = n_o / n_ref,
  d = rate_a - rate_ref = w (rate_a - rate_o), and rate_a, rate_o are independent means of [0, 1]
  indicators, so Hoeffding on their difference gives
  U = d_hat + w sqrt( log(1/delta') / 2 * (1/n_a + 1/n_o) )   (same for the other side, -d).
  The DP threshold (the median reward) and the standardization are estimated on the same data and treated
  as fixed; counts are conditioned on (see the docs for what that leaves out).
- CF (mean |z - z_twin| per group, one-sided): values clipped at B (``cf_clip``, default 1 standard unit),
  empirical-Bernstein bound of Maurer & Pontil (2009) on X / B in [0, 1]:
  U = mean + sqrt(2 V log(2/delta') / n) * B + 7 B log(2/delta') / (3 (n - 1)), V = sample variance of X/B.
  The certified quantity is E min(|dz|, B); the share of clipped values is reported (0 = no difference).

Cells too small to estimate (fewer than ``min_count``) are not constrained in training and are listed under
``uncovered`` rather than certified; ``certified`` is true when every covered bound is <= eps and at least one
constraint is covered.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from faro_core.errors import FaroError
from faro_core.fairness.constraint_set import CONSTRAINT_TYPES
from faro_core.fairness.constraints import DEFAULT_MIN_COUNT, Constraint, CounterfactualFairness
from faro_core.fairness.pairs import GroupIndex, PairBatch
from faro_core.store.runs import Run

DEFAULT_DELTA = 0.05
DEFAULT_CF_CLIP = 1.0


def hoeffding_diff_ucb(d_hat: float, n_a: float, n_ref: float, delta: float) -> float:
    """Upper bound on d = rate_a - rate_ref (ref includes a) at confidence 1 - delta (see module docstring)."""
    n_o = n_ref - n_a
    if n_o <= 0:  # the group is the whole stratum: d = 0 identically
        return d_hat
    w = n_o / n_ref
    return d_hat + w * math.sqrt(math.log(1.0 / delta) / 2.0 * (1.0 / n_a + 1.0 / n_o))


def bernstein_ucb(values: np.ndarray, bound: float, delta: float) -> float:
    """Empirical-Bernstein upper bound (Maurer & Pontil 2009, Thm 4) on E X for X in [0, bound]."""
    x = np.clip(np.asarray(values, dtype=float), 0.0, bound) / bound
    n = len(x)
    if n < 2:
        return math.inf
    var = float(np.var(x, ddof=1))
    lg = math.log(2.0 / delta)
    return bound * (float(x.mean()) + math.sqrt(2.0 * var * lg / n) + 7.0 * lg / (3.0 * (n - 1)))


def _cf_units(batch: PairBatch, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(|dz| per twin response [M], cell per response [M], cell k = no group): CF's per-unit values.

    Mirrors :meth:`CounterfactualFairness.cell_stats` (strict); certify checks the cell means agree.
    """
    scale = torch.cat([batch.r_chosen, batch.r_rejected]).std(unbiased=False) + 1e-6
    m = ~torch.isnan(batch.cf_r_chosen) & ~torch.isnan(batch.cf_r_rejected)
    diff = torch.cat([(batch.r_chosen - batch.cf_r_chosen)[m], (batch.r_rejected - batch.cf_r_rejected)[m]])
    a = torch.cat([batch.group[m], batch.group[m]])
    cell = torch.where(a >= 0, a, torch.full_like(a, k))
    return (diff / scale).abs().double().numpy(), cell.numpy()


def certify(batch: PairBatch, index: GroupIndex, kinds: list[str], epsilon: float | dict[str, float],
            delta: float = DEFAULT_DELTA, min_count: int = DEFAULT_MIN_COUNT, cf_clip: float = DEFAULT_CF_CLIP) -> dict[str, Any]:
    """Certificate of a batch of held-out rewards for constraint kinds ``kinds`` at slack ``epsilon``.

    Returns ``{"certified", "delta", "delta_per_constraint", "m", "epsilon", "bounds": [...], "uncovered": [...],
    "max_upper", "min_slack"}``; each bound row: ``name, kind, cell, side, empirical, upper, slack, n_group,
    n_anchor, driving_n``.
    """
    if not 0 < delta < 1:
        raise FaroError(f"--delta must be in (0, 1), got {delta}")
    kinds = [k.strip().lower() for k in kinds if k and k.strip()]
    bad = [k for k in kinds if k not in CONSTRAINT_TYPES]
    if bad or not kinds:
        raise FaroError(f"unknown constraint kind(s) {bad or kinds}; choose from {', '.join(CONSTRAINT_TYPES)}")
    cons: list[Constraint] = [CONSTRAINT_TYPES[k](epsilon=0.0, min_count=min_count).bind(index) for k in kinds]
    rows, uncovered = [], []
    per_cons = []
    for c in cons:
        stats = c.cell_stats(batch, smooth=False)
        d, ok = c.disparities(stats)
        per_cons.append((c, stats, d, ok))
    m = sum(int(ok.sum()) * (2 if c.two_sided else 1) for c, _, _, ok in per_cons)
    dprime = delta / max(m, 1)
    for c, stats, d, ok in per_cons:
        eps = float(epsilon[c.kind] if isinstance(epsilon, dict) else epsilon)
        cells = c.cell_names()
        if isinstance(c, CounterfactualFairness):
            vals, cell_of = _cf_units(batch, len(index.pair_groups))
        for i, cell in enumerate(cells):
            if not bool(ok[i]):
                if float(stats.cnt[i]) > 0:  # an empty cell (e.g. no group-naming partners) is no constraint
                    uncovered.append({"kind": c.kind, "cell": cell, "n_group": float(stats.cnt[i])})
                continue
            n_a, n_ref = float(stats.cnt[i]), float(stats.cnt_ref[i])
            if isinstance(c, CounterfactualFairness):
                v = vals if cell == "all" else vals[cell_of == i]
                assert abs(float(v.mean()) - float(d[i])) < 1e-3, "CF units disagree with the strict statistic"
                up = bernstein_ucb(v, cf_clip, dprime)
                rows.append({"name": f"cf[{cell}]", "kind": "cf", "cell": cell, "side": "+",
                             "empirical": float(d[i]), "upper": up, "slack": eps - up, "n_group": n_a,
                             "n_anchor": None, "driving_n": n_a, "clipped_share": float(np.mean(v > cf_clip)),
                             "epsilon": eps})
                continue
            for side, val in (("+", float(d[i])), ("-", -float(d[i]))):
                up = hoeffding_diff_ucb(val, n_a, n_ref, dprime)
                rows.append({"name": f"{c.kind}[{cell}]{side}", "kind": c.kind, "cell": cell, "side": side,
                             "empirical": val, "upper": up, "slack": eps - up, "n_group": n_a, "n_anchor": n_ref,
                             "driving_n": min(n_a, n_ref - n_a) if n_ref > n_a else n_a, "epsilon": eps})
    certified = bool(rows) and all(r["upper"] <= r["epsilon"] + 1e-12 for r in rows)
    worst = min(rows, key=lambda r: r["slack"]) if rows else None
    by_kind: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = by_kind.setdefault(r["kind"], {"max_empirical": -math.inf, "max_upper": -math.inf, "certified": True})
        k["max_empirical"] = max(k["max_empirical"], r["empirical"])
        k["max_upper"] = max(k["max_upper"], r["upper"])
        k["certified"] = k["certified"] and r["upper"] <= r["epsilon"] + 1e-12
    return {"certified": certified, "delta": delta, "delta_per_constraint": dprime, "m": m,
            "epsilon": epsilon, "kinds": kinds, "cf_clip": cf_clip, "min_count": min_count,
            "max_upper": worst["upper"] if worst else None, "min_slack": worst["slack"] if worst else None,
            "binding": worst["name"] if worst else None, "by_kind": by_kind, "bounds": rows,
            "uncovered": uncovered}


def certify_run(run: Run, delta: float = DEFAULT_DELTA, epsilon: float | None = None,
                kinds: list[str] | None = None, split: str = "test", cf_clip: float = DEFAULT_CF_CLIP,
                write: bool = True) -> dict[str, Any]:
    """Certificate of a finished run on its held-out split; writes ``certificate.json`` into the run.

    ``kinds`` default to the run's trained constraints, or dp, eo and cf for an unconstrained run;
    ``epsilon`` defaults to the run's (0.05 if it has none).
    """
    from faro_core.evaluate.metrics import frame_to_batch, load_split, run_index

    t0 = time.perf_counter()
    cfg = run.config
    if kinds is None:
        kinds = list(cfg.get("constraints") or []) or ["dp", "eo", "cf"]
    if epsilon is None:
        e = cfg.get("epsilon")
        epsilon = float(e) if e is not None and math.isfinite(float(e)) else 0.05
    df = load_split(run, split)
    batch, _ = frame_to_batch(df, run_index(run))
    res = certify(batch, run_index(run), kinds, float(epsilon), delta, int(cfg.get("min_count", DEFAULT_MIN_COUNT)), cf_clip)
    res.update(run_id=run.run_id, split=split, seconds=round(time.perf_counter() - t0, 3))
    if write:
        run.write("certificate.json", res)
    return res
