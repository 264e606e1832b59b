"""Fairness certificates on held-out data (DESIGN §6; derivation in docs/EVALUATION.md).

For each one-sided constraint j (a cell of DP / EO / CF, see :mod:`faro_core.fairness.constraints`) we report the
empirical violation g_j (the constraint objects' own strict value), a one-sided upper confidence bound
U_j with P(g*_j <= U_j for all j) >= 1 - delta, a lower confidence bound L_j (the other side's bound, so the
uppers and lowers hold jointly at 1 - delta), the slack eps - U_j, the group size driving U_j, the bound
used, and the held-out size that would certify eps at the observed rates (``n_to_certify``).
The m one-sided constraints are union-bounded: each bound holds at level delta' = delta / m.

- DP, EO (a group's rate minus its stratum's rate, the stratum including the group):
  with n_a members of the group, n_o = n_ref - n_a others, w = n_o / n_ref,
  d = rate_a - rate_ref = w (rate_a - rate_o), and rate_a, rate_o are independent means of 0/1
  indicators. ``bound`` (:mod:`.bounds`): ``clopper-pearson`` (default) or ``bernstein`` bound each rate at
  delta' / 2 and combine, U = w (U_a - L_o); ``hoeffding`` bounds the difference directly,
  U = d_hat + w sqrt( log(1/delta') / 2 * (1/n_a + 1/n_o) )   (same for the other side, -d).
  The standardization is estimated on the same data and treated as fixed; counts are conditioned on.
- CF (mean |z - z_twin| per group, one-sided): values clipped at B (``cf_clip``, default 1 standard unit),
  empirical-Bernstein bound of Maurer & Pontil (2009) on X / B in [0, 1]:
  U = mean + sqrt(2 V log(2/delta') / n) * B + 7 B log(2/delta') / (3 (n - 1)), V = sample variance of X/B.
  The certified quantity is E min(|dz|, B); the share of clipped values is reported (0 = no difference).
- Role (``attribute = "role"``, :func:`certify_role`): v_DP = |p - 1/2| with p = mean x_dp over ambiguous
  items, and v_EO = |acc_biased - acc_counter| / 2 over disambiguated items; a two-sided interval of the
  signed gap gives both an upper and a lower bound of v.

Cells too small to estimate (fewer than ``min_count``) are not constrained in training and are listed under
``uncovered`` rather than certified; ``certified`` is true when every covered bound is <= eps and at least one
constraint is covered. ``above_epsilon`` is true when some lower bound exceeds eps (the model is certifiably
in violation of eps, at the same 1 - delta).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd
import torch

from faro_core.errors import FaroError
from faro_core.evaluate.bounds import (
    DEFAULT_BOUND,
    check_bound,
    difference_bounds,
    difference_upper,
    empirical_bernstein_ucb,
    rate_bounds,
    scales_to_reach,
)
from faro_core.fairness.attributes import attribute_strategy
from faro_core.fairness.constraint_set import CONSTRAINT_TYPES
from faro_core.fairness.constraints import DEFAULT_MIN_COUNT, Constraint, CounterfactualFairness
from faro_core.fairness.pairs import GroupIndex, PairBatch
from faro_core.store.runs import Run

DEFAULT_DELTA = 0.05
DEFAULT_CF_CLIP = 1.0
ROLE_KINDS = ("dp", "eo")  # CF has no role counterpart: its twins swap named groups
MIN_CLUSTERS = 20  # fewer clusters than this: no cluster-robust certificate is issued
UNITS = ("cluster", "item")  # what a certificate counts as its independent draws


def design_effect(x: np.ndarray, clusters: np.ndarray | None) -> dict[str, Any]:
    """The design effect of the mean of ``x`` [n] under cluster sampling (clusters [n]; None: each value its
    own cluster), and the effective sample size.

    deff = V_CR / V_iid, with V_iid = s^2 / n (s^2 the sample variance) and V_CR the cluster-robust variance
    of the mean, G / (G - 1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2 over the G clusters (for clusters of
    equal size m this estimates 1 + (m - 1) ICC). deff is truncated at 1 (ICC at 0), so n_eff = n / deff is
    capped at n. Returns ``{"clusters": G, "n": n, "design_effect": deff, "n_eff": n_eff}``."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if clusters is None or n < 2:
        g = n
        return {"clusters": int(g), "n": int(n), "design_effect": 1.0, "n_eff": float(n)}
    codes = pd.factorize(pd.Series(np.asarray(clusters).astype(str)))[0]
    g = int(codes.max()) + 1 if n else 0
    v_iid = float(np.var(x, ddof=1)) / n
    if g < 2 or v_iid <= 0:
        return {"clusters": g, "n": int(n), "design_effect": 1.0, "n_eff": float(n)}
    e = np.bincount(codes, weights=x - x.mean(), minlength=g)
    v_cr = g / (g - 1) * float(np.sum(e ** 2)) / n ** 2
    deff = max(1.0, v_cr / v_iid)
    return {"clusters": g, "n": int(n), "design_effect": deff, "n_eff": n / deff}


def estimand(unit: str, split_by: str | None) -> str:
    """What a bound covers, in words: the population its held-out draws stand for."""
    kind = split_by or "item"
    if unit == "item" or kind == "item":
        if kind == "template":
            return ("held-out items counted as independent draws (item-level bound; items of one template "
                    "are not independent, so this overstates the evidence)")
        return "held-out items drawn like these (their templates or prompts may also occur in training)"
    if kind == "template":
        return "unseen templates drawn like these (questions from templates the model never saw)"
    return f"unseen values of {kind[len('column:'):]!r} drawn like these"


def hoeffding_diff_ucb(d_hat: float, n_a: float, n_ref: float, delta: float) -> float:
    """Upper bound on d = rate_a - rate_ref (ref includes a) at confidence 1 - delta (see module docstring)."""
    n_o = n_ref - n_a
    if n_o <= 0:  # the group is the whole stratum: d = 0 identically
        return d_hat
    w = n_o / n_ref
    return d_hat + w * math.sqrt(math.log(1.0 / delta) / 2.0 * (1.0 / n_a + 1.0 / n_o))


def bernstein_ucb(values: np.ndarray, bound: float, delta: float) -> float:
    """Empirical-Bernstein upper bound (Maurer & Pontil 2009, Thm 4) on E X for X in [0, bound]."""
    return empirical_bernstein_ucb(values, bound, delta)


def anchored_bounds(bound: str, k_a: object, n_a: object, k_ref: object, n_ref: object,
                    delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) of d = rate_a - rate_ref (the anchor ref includes the group a), each one-sided at 1 - delta.

    ``k_a`` / ``k_ref``: selected members (0/1 outcomes) of the group and of its anchor (arrays broadcast).
    With n_o = n_ref - n_a others, d = w (rate_a - rate_o), w = n_o / n_ref
    (:func:`~faro_core.evaluate.bounds.difference_bounds`); where n_o = 0, d = 0 identically."""
    k_a, n_a, k_ref, n_ref = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (k_a, n_a, k_ref, n_ref)))
    n_o = n_ref - n_a
    whole = n_o <= 0  # the group is the whole stratum
    n_o_safe = np.where(whole, 1.0, n_o)
    lo, up = difference_bounds(bound, k_a / n_a, n_a, (k_ref - k_a) / n_o_safe, n_o_safe, delta,
                               weight=np.where(whole, 0.0, n_o / n_ref))
    d_hat = k_a / n_a - k_ref / n_ref
    return np.where(whole, d_hat, lo), np.where(whole, d_hat, up)


def anchored_upper(bound: str, k_a: object, n_a: object, k_ref: object, n_ref: object, delta: float,
                   plus: object = True) -> np.ndarray:
    """The one-sided upper bound of d (``plus``) or of -d (not ``plus``), per element; see
    :func:`anchored_bounds`. The upper bound of -d = w (rate_o - rate_a) is the same bound with a and o swapped."""
    k_a, n_a, k_ref, n_ref, plus = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in
                                                         (k_a, n_a, k_ref, n_ref, plus)))
    plus = plus.astype(bool)
    n_o = n_ref - n_a
    whole = n_o <= 0
    n_o = np.where(whole, 1.0, n_o)
    r_a, r_o = k_a / n_a, (k_ref - k_a) / n_o
    up = difference_upper(bound, np.where(plus, r_a, r_o), np.where(plus, n_a, n_o), np.where(plus, r_o, r_a),
                          np.where(plus, n_o, n_a), delta, weight=np.where(whole, 0.0, n_o / n_ref))
    d_hat = np.where(plus, 1.0, -1.0) * (k_a / n_a - k_ref / n_ref)
    return np.where(whole, d_hat, up)


def _cf_units(batch: PairBatch, k: int, clusters: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|dz| per twin response [M], cell per response [M], cell k = no group, cluster per response [M]; the
    pair's index where ``clusters`` is None): CF's per-unit values.

    Mirrors :meth:`CounterfactualFairness.cell_stats` (strict); certify checks the cell means agree.
    """
    scale = torch.cat([batch.r_chosen, batch.r_rejected]).std(unbiased=False) + 1e-6
    m = ~torch.isnan(batch.cf_r_chosen) & ~torch.isnan(batch.cf_r_rejected)
    diff = torch.cat([(batch.r_chosen - batch.cf_r_chosen)[m], (batch.r_rejected - batch.cf_r_rejected)[m]])
    a = torch.cat([batch.group[m], batch.group[m]])
    cell = torch.where(a >= 0, a, torch.full_like(a, k))
    mm = m.numpy()
    cl = np.asarray(clusters).astype(str)[mm] if clusters is not None else np.flatnonzero(mm).astype(str)
    return (diff / scale).abs().double().numpy(), cell.numpy(), np.concatenate([cl, cl])


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Top-level fields shared by both certificates: certified, above_epsilon, worst row, per-kind maxima."""
    certified = bool(rows) and all(r["upper"] <= r["epsilon"] + 1e-12 and not r.get("why_not") for r in rows)
    above = bool(rows) and any(r["lower"] > r["epsilon"] + 1e-12 for r in rows)
    worst = min(rows, key=lambda r: r["slack"]) if rows else None
    by_kind: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = by_kind.setdefault(r["kind"], {"max_empirical": -math.inf, "max_upper": -math.inf,
                                           "max_lower": -math.inf, "certified": True, "above_epsilon": False})
        k["max_empirical"] = max(k["max_empirical"], r["empirical"])
        k["max_upper"] = max(k["max_upper"], r["upper"])
        k["max_lower"] = max(k["max_lower"], r["lower"])
        k["certified"] = k["certified"] and r["upper"] <= r["epsilon"] + 1e-12 and not r.get("why_not")
        k["above_epsilon"] = k["above_epsilon"] or r["lower"] > r["epsilon"] + 1e-12
    scales = [r.pop("_scale") for r in rows]
    return {"certified": certified, "above_epsilon": above,
            "max_upper": worst["upper"] if worst else None, "min_slack": worst["slack"] if worst else None,
            "max_lower": max(r["lower"] for r in rows) if rows else None,
            "binding": worst["name"] if worst else None, "by_kind": by_kind,
            "_scale": max(scales) if scales else math.inf}


def _check_request(delta: float, bound: str, kinds: list[str], allowed: Collection[str],
                   what: str) -> tuple[str, list[str]]:
    """The checked bound name and the lower-cased kinds; a one-line error for a delta outside (0, 1) or a kind
    not in ``allowed``."""
    if not 0 < delta < 1:
        raise FaroError(f"--delta must be in (0, 1), got {delta}")
    kinds = [k.strip().lower() for k in kinds if k and k.strip()]
    bad = [k for k in kinds if k not in allowed]
    if bad or not kinds:
        raise FaroError(f"{what} {bad or kinds}; choose from {', '.join(allowed)}")
    return check_bound(bound), kinds


def certify(batch: PairBatch, index: GroupIndex, kinds: list[str], epsilon: float | dict[str, float],
            delta: float = DEFAULT_DELTA, min_count: int = DEFAULT_MIN_COUNT, cf_clip: float = DEFAULT_CF_CLIP,
            bound: str = DEFAULT_BOUND, sizes: bool = True, clusters: np.ndarray | None = None,
            unit: str = "cluster", split_by: str | None = None) -> dict[str, Any]:
    """Certificate of a batch of held-out rewards for constraint kinds ``kinds`` at slack ``epsilon``.

    ``bound``: the DP / EO bound (``clopper-pearson``, ``bernstein`` or ``hoeffding``; CF always uses the
    empirical-Bernstein bound). Returns ``{"certified", "above_epsilon", "bound", "delta",
    "delta_per_constraint", "m", "epsilon", "bounds": [...], "uncovered": [...], "max_upper", "max_lower",
    "min_slack", "n_heldout", "n_heldout_to_certify", ...}``; each bound row: ``name, kind, cell, side,
    bound, empirical, upper, lower, slack, n_group, n_anchor, driving_n, n_to_certify``. ``n_to_certify``
    is the anchor size (DP: responses, EO: pairs, CF: twin responses) at which the row's upper bound would
    reach eps at the observed rates (None when the observed value is already >= eps); ``n_heldout`` counts
    the batch's pairs and ``n_heldout_to_certify`` scales it by the largest factor any row needs
    (``sizes=False`` skips these and leaves them None).

    ``clusters`` [N] (the split unit's cluster of each pair) with ``unit="cluster"``: CF's bound is taken at
    the design-effect n_eff of its values (:func:`design_effect`; no certificate under :data:`MIN_CLUSTERS`
    clusters). The DP / EO rows by named group count pairs as independent draws (``unit: "item"``); each
    row states its ``estimand``.
    """
    bound, kinds = _check_request(delta, bound, kinds, CONSTRAINT_TYPES, "unknown constraint kind(s)")
    if unit not in UNITS:
        raise FaroError(f"unknown certificate unit {unit!r}; choose from {', '.join(UNITS)}")
    clustered = unit == "cluster" and clusters is not None and (split_by or "item") != "item"
    cons: list[Constraint] = [CONSTRAINT_TYPES[k](epsilon=0.0, min_count=min_count).bind(index) for k in kinds]
    rows: list[dict[str, Any]] = []
    uncovered = []
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
            vals, cell_of, cl_of = _cf_units(batch, len(index.pair_groups), clusters)
        for i, cell in enumerate(cells):
            if not bool(ok[i]):
                if float(stats.cnt[i]) > 0:  # an empty cell (e.g. no group-naming partners) is no constraint
                    uncovered.append({"kind": c.kind, "cell": cell, "n_group": float(stats.cnt[i])})
                continue
            n_a, n_ref = float(stats.cnt[i]), float(stats.cnt_ref[i])
            if isinstance(c, CounterfactualFairness):
                sel = np.ones(len(vals), dtype=bool) if cell == "all" else cell_of == i
                v = vals[sel]
                assert abs(float(v.mean()) - float(d[i])) < 1e-3, "CF units disagree with the strict statistic"
                up = bernstein_ucb(v, cf_clip, dprime)
                design = design_effect(np.clip(v, 0.0, cf_clip), cl_of[sel] if clustered else None)
                if design["design_effect"] > 1.0:  # the same bound at n_eff = n / deff
                    up = cf_clip * float(_eb_mean_scaled(np.clip(v, 0.0, cf_clip) / cf_clip,
                                                         np.array([1.0 / design["design_effect"]]), dprime)[0])
                emp = float(d[i])
                scale = float(scales_to_reach(lambda s, v=v: cf_clip * _eb_mean_scaled(v / cf_clip, s, dprime),
                                              eps, emp)[0]) if sizes else math.inf
                row = {"name": f"cf[{cell}]", "kind": "cf", "cell": cell, "side": "+",
                       "bound": "empirical-bernstein" + (f" at the design-effect n_eff ({split_by} clusters)"
                                                         if clustered else ""),
                       "empirical": emp, "upper": up, "lower": 0.0,
                       "slack": eps - up, "n_group": n_a, "n_anchor": None, "driving_n": n_a,
                       "n_to_certify": _size(n_a, scale), "_scale": scale,
                       "clipped_share": float(np.mean(v > cf_clip)), "epsilon": eps,
                       "unit": "cluster" if clustered else "item", "clusters": design["clusters"],
                       "n_eff": design["n_eff"], "design_effect": design["design_effect"],
                       "estimand": estimand("cluster" if clustered else "item", split_by)}
                if clustered and design["clusters"] < MIN_CLUSTERS:
                    row["why_not"] = (f"only {design['clusters']} {split_by} clusters (fewer than {MIN_CLUSTERS}): "
                                      f"too few independent draws for a cluster-robust certificate")
                rows.append(row)
                continue
            k_a, k_ref = float(stats.num[i]), float(stats.num_ref[i])
            d_i = k_a / n_a - k_ref / n_ref  # the strict disparity d[i], in double precision
            assert abs(d_i - float(d[i])) < 1e-5, "counts disagree with the strict statistic"
            for side, val in (("+", d_i), ("-", -d_i)):
                rows.append({"name": f"{c.kind}[{cell}]{side}", "kind": c.kind, "cell": cell, "side": side,
                             "bound": bound, "empirical": val, "n_group": n_a, "n_anchor": n_ref,
                             "driving_n": min(n_a, n_ref - n_a) if n_ref > n_a else n_a,
                             "rate_group": k_a / n_a,
                             "rate_others": (k_ref - k_a) / (n_ref - n_a) if n_ref > n_a else None,
                             "epsilon": eps, "_counts": (k_a, n_a, k_ref, n_ref), "unit": "item",
                             "estimand": estimand("item", split_by)})
    _fill_anchored(rows, bound, dprime, sizes)
    summary = _summary(rows)
    scale = summary.pop("_scale")
    return {**summary, "bound": bound, "delta": delta, "delta_per_constraint": dprime, "m": m,
            "epsilon": epsilon, "kinds": kinds, "cf_clip": cf_clip, "min_count": min_count, "attribute": "group",
            "unit": unit, "split_by": split_by or "item",
            "estimand": estimand("cluster" if clustered else "item", split_by),
            "why_not": next((r["why_not"] for r in rows if r.get("why_not")), None),
            "n_heldout": len(batch), "n_heldout_to_certify": _size(len(batch), scale) if rows else None,
            "bounds": rows, "uncovered": uncovered}


def _fill_anchored(rows: list[dict[str, Any]], bound: str, delta: float, sizes: bool) -> None:
    """Bounds (and sizes to certify) of the DP / EO rows, vectorised over rows: side + bounds d, side - bounds -d."""
    idx = [i for i, r in enumerate(rows) if "_counts" in r]
    if not idx:
        return
    counts = np.array([rows[i].pop("_counts") for i in idx])  # [R, 4]: k_a, n_a, k_ref, n_ref
    plus = np.array([rows[i]["side"] == "+" for i in idx])
    eps = np.array([rows[i]["epsilon"] for i in idx])
    emp = np.array([rows[i]["empirical"] for i in idx])

    lo, up = anchored_bounds(bound, *counts.T, delta)
    lower, upper = np.where(plus, lo, -up), np.where(plus, up, -lo)

    def upper_at(s: np.ndarray) -> np.ndarray:
        return anchored_upper(bound, *(counts * np.asarray(s)[:, None]).T, delta, plus)

    scale = scales_to_reach(upper_at, eps, emp) if sizes else np.full(len(idx), math.inf)
    for j, i in enumerate(idx):
        rows[i].update(upper=float(upper[j]), lower=float(lower[j]), slack=float(eps[j] - upper[j]),
                       n_to_certify=_size(counts[j, 3], float(scale[j])) if sizes else None,
                       _scale=float(scale[j]))


def _size(n: float, scale: float) -> int | None:
    return int(math.ceil(n * scale)) if math.isfinite(scale) else None


def _eb_mean_scaled(x: np.ndarray, s: np.ndarray, delta: float) -> np.ndarray:
    """Maurer-Pontil's bound for the same mean and variance at s times the sample size (s: an array)."""
    n = len(x) * np.asarray(s, dtype=float)
    lg = math.log(2.0 / delta)
    with np.errstate(divide="ignore", invalid="ignore"):
        up = float(x.mean()) + np.sqrt(2.0 * float(np.var(x, ddof=1)) * lg / n) + 7.0 * lg / (3.0 * (n - 1))
    return np.where(n < 2, np.inf, up)


# ---------------------------------------------------------------------------------------------------
# the role attribute: one row per item (faro_core.fairness.role.role_items)
# ---------------------------------------------------------------------------------------------------
RateCounts = tuple[Any, Any, Any, Any]  # (mean, n, k_lo, k_hi): floats or arrays that broadcast


def rate_counts(x: np.ndarray) -> RateCounts:
    """(mean, n, k_lo, k_hi) of values in [0, 1]: k_lo counts values equal to 1, k_hi values above 0."""
    return float(x.mean()), float(len(x)), float(np.sum(x >= 1.0 - 1e-12)), float(np.sum(x > 1e-12))


def _scaled(c: RateCounts, s: Any) -> RateCounts:
    return c[0], c[1] * s, c[2] * s, c[3] * s


def role_dp_interval(c: RateCounts, bound: str, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) of p - 1/2, p = E x_dp (x_dp in {0, 1/2, 1}: the biased answer beats the counter one, a tie
    1/2), each one-sided at 1 - delta, from :func:`rate_counts` of x_dp. Clopper-Pearson counts a tie as a
    win for U and as a loss for L (conservative by half the tie share; exact without ties)."""
    mean, n, k_lo, k_hi = c
    lo, up = rate_bounds(bound, mean, n, delta, k_lo=k_lo, k_hi=k_hi)
    return lo - 0.5, up - 0.5


def role_eo_interval(cb: RateCounts, cc: RateCounts, bound: str, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) of (acc_biased - acc_counter) / 2, each one-sided at 1 - delta, from :func:`rate_counts` of x_eo
    on the items whose correct answer is biased (``cb``) and counter (``cc``); x_eo is 1 when the correct
    answer has the top reward, shared on ties (Clopper-Pearson: a shared top counts as a hit for U, a miss
    for L). The two accuracies are Fisher-combined (or Hoeffding on the difference)."""
    (mb, nb, klb, khb), (mc, nc, klc, khc) = cb, cc
    return difference_bounds(bound, mb, nb, mc, nc, delta, weight=0.5, k_a=(klb, khb), k_o=(klc, khc))


def role_interval(kind: str, counts: tuple[RateCounts, ...], bound: str, delta: float,
                  scale: Any = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(L, U) of the signed role gap of ``kind`` (dp: p - 1/2; eo: (acc_b - acc_c) / 2) with every count
    multiplied by ``scale`` (rates fixed)."""
    if kind == "dp":
        return role_dp_interval(_scaled(counts[0], scale), bound, delta)
    return role_eo_interval(_scaled(counts[0], scale), _scaled(counts[1], scale), bound, delta)


def _role_row(kind: str, x: tuple[np.ndarray, ...], bound: str, delta: float, eps: float,
              sizes: bool = True, clusters: tuple[np.ndarray | None, ...] | None = None,
              unit: str = "item", split_by: str | None = None) -> dict[str, Any]:
    """One role row: v = |signed gap|, its upper bound max(U, -L) and lower bound max(0, L, -U) from the
    two-sided interval (L, U) of the gap at delta per side.

    ``unit="cluster"`` (with ``clusters``, one array per sample of ``x``): each sample's counts are taken at
    its effective size n_eff = n / deff (:func:`design_effect`), so the bound is the same bound at the
    design-effect-corrected n; under :data:`MIN_CLUSTERS` clusters the row carries ``why_not`` and does not
    certify. ``unit="item"``: every item an independent draw."""
    counts = tuple(rate_counts(v) for v in x)
    cl = clusters if clusters is not None else (None,) * len(x)
    clustered = unit == "cluster" and (split_by or "item") != "item" and clusters is not None
    unit = "cluster" if clustered else "item"
    designs = [design_effect(v, c if clustered else None) for v, c in zip(x, cl)]
    counts = tuple(_scaled(c, d["n_eff"] / max(d["n"], 1)) for c, d in zip(counts, designs))
    lo, up = (float(v) for v in role_interval(kind, counts, bound, delta))
    if kind == "dp":
        (xd,) = x
        gap, n = float(xd.mean()) - 0.5, len(xd)
        extra: dict[str, Any] = {"rate_biased_wins": float(xd.mean()), "ties": int(np.sum((xd > 0) & (xd < 1)))}
        cell, n_group = "ambiguous", float(n)
    else:
        xb, xc = x
        gap = (float(xb.mean()) - float(xc.mean())) / 2.0
        n = len(xb) + len(xc)
        extra = {"acc_biased": float(xb.mean()), "acc_counter": float(xc.mean()), "gap": 2.0 * gap,
                 "n_biased": len(xb), "n_counter": len(xc)}
        cell, n_group = "disambiguated", float(min(len(xb), len(xc)))
    v = abs(gap)
    upper, lower = max(up, -lo), max(0.0, lo, -up)

    def upper_at(s: np.ndarray) -> np.ndarray:
        lo_s, up_s = role_interval(kind, counts, bound, delta, scale=s)
        return np.maximum(up_s, -lo_s)

    scale = float(scales_to_reach(upper_at, eps, v)[0]) if sizes else math.inf
    n_clusters = min(d["clusters"] for d in designs)
    row = {"name": f"{kind}[role]", "kind": kind, "cell": cell, "side": "|.|",
           "bound": bound if not clustered else f"{bound} at the design-effect n_eff ({split_by} clusters)",
           "empirical": v, "signed": gap, "upper": upper, "lower": lower, "slack": eps - upper,
           "n_group": n_group, "n_anchor": float(n), "driving_n": n_group, "n_items": int(n),
           "n_to_certify": _size(n, scale) if sizes else None, "_scale": scale, "epsilon": eps,
           "unit": unit, "clusters": int(n_clusters), "n_eff": float(sum(d["n_eff"] for d in designs)),
           "design_effect": float(max(d["design_effect"] for d in designs)),
           "estimand": estimand(unit, split_by), **extra}
    if clustered and n_clusters < MIN_CLUSTERS:
        row["why_not"] = (f"only {n_clusters} {split_by} clusters held out (fewer than {MIN_CLUSTERS}): too few "
                          f"independent draws for a cluster-robust certificate")
    return row


def role_samples(items: pd.DataFrame) -> dict[str, Any]:
    """The role certificate's samples from a :func:`faro_core.fairness.role.role_items` frame:
    ``{"dp": (x_dp of ambiguous items,), "eo": (x_eo where correct = biased, x_eo where correct = counter)}``."""
    missing = {"x_dp", "x_eo", "correct_role"} - set(items.columns)
    if missing:
        raise FaroError(f"role items lack column(s) {sorted(missing)}")
    x_dp = items["x_dp"].to_numpy(dtype=float)
    x_eo = items["x_eo"].to_numpy(dtype=float)
    role = items["correct_role"].astype(str).to_numpy()
    dis = ~np.isnan(x_eo)
    return {"dp": (x_dp[~np.isnan(x_dp)],),
            "eo": (x_eo[dis & (role == "biased")], x_eo[dis & (role == "counter")])}


def role_clusters(items: pd.DataFrame) -> dict[str, tuple[np.ndarray, ...]]:
    """The cluster of each value of :func:`role_samples` (same keys and order): the items' ``cluster`` column,
    else their ``item_id``."""
    cl = (items["cluster"] if "cluster" in items else items["item_id"]).astype(str).to_numpy()
    x_dp = items["x_dp"].to_numpy(dtype=float)
    x_eo = items["x_eo"].to_numpy(dtype=float)
    role = items["correct_role"].astype(str).to_numpy()
    dis = ~np.isnan(x_eo)
    return {"dp": (cl[~np.isnan(x_dp)],), "eo": (cl[dis & (role == "biased")], cl[dis & (role == "counter")])}


def certify_role(items: pd.DataFrame, kinds: list[str], epsilon: float | dict[str, float],
                 delta: float = DEFAULT_DELTA, bound: str = DEFAULT_BOUND, min_count: int = 20,
                 by: str | None = "category", sizes: bool = True, unit: str = "cluster",
                 split_by: str | None = None) -> dict[str, Any]:
    """Certificate of the role attribute's DP / EO violations (one row per kind) on held-out items.

    ``items``: one row per BBQ item (:func:`faro_core.fairness.role.role_items`). The m = 2 x (number of
    kinds) one-sided bounds of the signed gaps are union-bounded (delta' = delta / m): each row's upper and
    lower bound of v come from one two-sided interval at delta' per side, so every row's upper and lower bound
    hold jointly with probability >= 1 - delta. A kind with fewer than ``min_count`` items (EO: per role) is
    listed under ``uncovered``. ``by``: a column (default ``category``) whose values get the same rows
    at the pointwise delta under ``by_<column>``, reported, not certified. Same top-level keys as
    :func:`certify`, with ``attribute = "role"``; ``n_heldout`` counts items and ``n_to_certify`` a row's
    items (``sizes=False`` skips the sizes).

    ``unit``: ``cluster`` (default) counts the items' ``cluster`` column (the split unit ``split_by``: a
    template, say) as the independent draws (:func:`_role_row`); ``item`` counts every item as one. Each row
    names its ``bound``, ``clusters``, ``n_eff``, ``design_effect`` and ``estimand``.
    """
    bound, kinds = _check_request(delta, bound, kinds, ROLE_KINDS, "no role certificate for kind(s)")
    if unit not in UNITS:
        raise FaroError(f"unknown certificate unit {unit!r}; choose from {', '.join(UNITS)}")

    def rows_of(frame: pd.DataFrame, dlt: float | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                                  int]:
        samples = role_samples(frame)
        clusters = role_clusters(frame)
        enough = {"dp": len(samples["dp"][0]) >= min_count,
                  "eo": min(len(samples["eo"][0]), len(samples["eo"][1])) >= min_count}
        covered = [k for k in kinds if enough[k]]
        m = 2 * len(covered)
        dp_ = dlt if dlt is not None else delta / max(m, 1)
        rows, unc = [], []
        for k in kinds:
            if not enough[k]:
                n = min(len(v) for v in samples[k])
                unc.append({"kind": k, "cell": "role", "n_group": float(n)})
                continue
            eps = float(epsilon[k] if isinstance(epsilon, dict) else epsilon)
            rows.append(_role_row(k, samples[k], bound, dp_, eps, sizes=sizes and dlt is None,
                                  clusters=clusters[k], unit=unit, split_by=split_by))
        return rows, unc, m

    rows, uncovered, m = rows_of(items, None)
    summary = _summary(rows)
    scale = summary.pop("_scale")
    out = {**summary, "bound": bound, "delta": delta, "delta_per_constraint": delta / max(m, 1), "m": m,
           "epsilon": epsilon, "kinds": kinds, "min_count": min_count, "attribute": "role", "unit": unit,
           "split_by": split_by or "item", "estimand": estimand(unit, split_by),
           "why_not": next((r["why_not"] for r in rows if r.get("why_not")), None),
           "n_heldout": int(len(items)), "n_heldout_to_certify": _size(len(items), scale) if rows else None,
           "bounds": rows, "uncovered": uncovered}
    if by and by in items.columns:
        per: dict[str, Any] = {}
        for val, sub in items.groupby(items[by].astype(str)):
            sub_rows, sub_unc, _ = rows_of(sub, delta / 2.0)
            for r in sub_rows:
                r.pop("_scale")
            per[str(val)] = {"n_items": int(len(sub)), "bounds": sub_rows, "uncovered": sub_unc}
        out[f"by_{by}"] = {"delta_per_side": delta / 2.0, "note": "pointwise (not union-bounded); reported, "
                           "not certified", "values": per}
    return out


def _combine(role: dict[str, Any], cf: dict[str, Any] | None, delta: float) -> dict[str, Any]:
    """One certificate of a role run: the role rows (DP/EO) and, when CF is certified too, the CF rows, under
    one union bound (each part was computed at delta x its share of the m one-sided bounds)."""
    if cf is None:
        return role

    def scale(r: dict[str, Any]) -> float:  # the factor a row's size must grow by (n_to_certify / its size)
        size = r["n_group"] if r["kind"] == "cf" else r["n_anchor"]
        return math.inf if r.get("n_to_certify") is None else r["n_to_certify"] / size

    rows = role["bounds"] + cf["bounds"]
    summary = _summary([{**r, "_scale": scale(r)} for r in rows])
    largest = summary.pop("_scale")
    m = role["m"] + cf["m"]
    return {**role, **summary, "m": m, "delta": delta, "delta_per_constraint": delta / max(m, 1),
            "kinds": role["kinds"] + ["cf"], "cf_clip": cf["cf_clip"], "bounds": rows,
            "uncovered": role["uncovered"] + cf["uncovered"], "n_heldout_to_certify": _size(role["n_heldout"], largest),
            "why_not": role.get("why_not") or cf.get("why_not")}


def certify_run(run: Run, delta: float = DEFAULT_DELTA, epsilon: float | None = None,
                kinds: list[str] | None = None, split: str = "test", cf_clip: float = DEFAULT_CF_CLIP,
                write: bool = True, bound: str = DEFAULT_BOUND, sizes: bool = True,
                unit: str = "cluster") -> dict[str, Any]:
    """Certificate of a finished run on its held-out split; writes ``certificate.json`` into the run.

    ``unit``: ``cluster`` (default) treats the run's split unit (``split_by``: template on BBQ) as the
    independent draws, so the certificate covers unseen clusters drawn like the held-out ones; ``item``
    counts every item (the older item-level bound, with its own estimand).

    ``kinds`` default to the run's trained constraints, or dp, eo and cf for an unconstrained run;
    ``epsilon`` defaults to the run's (0.05 if it has none); ``bound``: see :func:`certify`. A run trained
    with a per-item attribute (``role``) gets the role certificate (:func:`certify_role`) for DP and EO, on the
    item table of its held-out split (:meth:`~faro_core.fairness.attributes.Attribute.items`), and CF's rows
    by named group beside them, under one union bound over all m one-sided bounds.
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
    index = run_index(run)
    batch, _ = frame_to_batch(df, index)
    min_count = int(cfg.get("min_count", DEFAULT_MIN_COUNT))
    split_by = cfg.get("split_by") or "item"
    if unit not in UNITS:
        raise FaroError(f"unknown certificate unit {unit!r}; choose from {', '.join(UNITS)}")
    clusters = df["cluster"].astype(str).to_numpy() if "cluster" in df else None
    cl_kw = {"clusters": clusters, "unit": unit, "split_by": split_by}
    attribute = attribute_strategy(index.attribute)
    if attribute.per_item:
        role_kinds = [k for k in kinds if k in ROLE_KINDS]
        cf = None
        if "cf" in kinds:  # CF's cells by named group: count them first, to share the union bound
            probe = certify(batch, index, ["cf"], float(epsilon), delta, min_count, cf_clip, bound, sizes=False)
            m_cf, m_role = probe["m"], 2 * len(role_kinds)
            if m_cf and role_kinds:
                cf = certify(batch, index, ["cf"], float(epsilon), delta * m_cf / (m_cf + m_role), min_count,
                             cf_clip, bound, sizes=sizes, **cl_kw)
                delta_role = delta * m_role / (m_cf + m_role)
            else:
                cf, delta_role = (probe if not role_kinds else None), delta
        else:
            delta_role = delta
        if role_kinds:
            res = certify_role(attribute.items(df), role_kinds, float(epsilon), delta_role, bound, min_count,
                               sizes=sizes, unit=unit, split_by=split_by)
            res = _combine(res, cf, delta)
        else:
            res = certify(batch, index, ["cf"], float(epsilon), delta, min_count, cf_clip, bound, sizes=sizes,
                          **cl_kw)
    else:
        res = certify(batch, index, kinds, float(epsilon), delta, min_count, cf_clip, bound=bound, sizes=sizes,
                      **cl_kw)
    res.update(run_id=run.run_id, split=split, seconds=round(time.perf_counter() - t0, 3))
    if write:
        run.write("certificate.json", res)
    return res
