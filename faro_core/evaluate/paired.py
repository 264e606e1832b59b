"""The paired claim: on the same held-out items, how much less often one reward prefers the stereotyped answer
than another, with a cluster-robust interval; and the seed-level test of that difference across data draws.

For a role run, each ambiguous held-out item i gives x_i = 1 when the reward ranks its biased answer above
its counter answer (1/2 on a tie, 0 otherwise; :func:`faro_core.fairness.role.role_items`), so
P = mean x_i is "how often the reward prefers the stereotyped person". For two runs A and B scored on the
same items, d_i = x_i^A - x_i^B and

    Delta P = P_A - P_B = mean_i d_i.

Items of one cluster (a BBQ template, the split unit) are not independent. The interval uses the
cluster-robust (CR1) variance of the mean, V = G / (G - 1) * sum_g (sum_{i in g} (d_i - Delta P))^2 / n^2
over the G clusters, and a t quantile with G - 1 degrees of freedom: Delta P +- t_{G-1} sqrt(V). Pairing
removes what the two runs share (the items' difficulty), so this needs far fewer items than two separate
bounds. Across data draws (seeds), :func:`seed_level` tests the seed-level differences with a t test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from faro_core.errors import FaroError

LEVEL = 0.95


def cluster_mean_interval(x: np.ndarray, clusters: np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """Mean of ``x`` [n] with its cluster-robust t interval (see the module docstring).

    Returns ``{"value", "lo", "hi", "se", "n", "clusters", "design_effect", "p_greater", "p_less"}``;
    ``p_greater`` is the one-sided p-value of the mean being > 0 (t with G - 1 df), ``p_less`` of it
    being < 0. Fewer than 2 clusters: NaN interval."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    codes = pd.factorize(pd.Series(np.asarray(clusters).astype(str)))[0]
    g = int(codes.max()) + 1 if n else 0
    nan = float("nan")
    if n == 0:
        return {"value": nan, "lo": nan, "hi": nan, "se": nan, "n": 0, "clusters": 0, "design_effect": nan,
                "p_greater": nan, "p_less": nan}
    mean = float(x.mean())
    if g < 2:
        return {"value": mean, "lo": nan, "hi": nan, "se": nan, "n": n, "clusters": g, "design_effect": nan,
                "p_greater": nan, "p_less": nan}
    e = np.bincount(codes, weights=x - mean, minlength=g)
    var = g / (g - 1) * float(np.sum(e ** 2)) / n ** 2
    se = math.sqrt(var)
    v_iid = float(np.var(x, ddof=1)) / n if n > 1 else nan
    t = float(stats.t.ppf(0.5 + level / 2, g - 1))
    if se > 0:
        tstat = mean / se
        p_greater, p_less = float(stats.t.sf(tstat, g - 1)), float(stats.t.cdf(tstat, g - 1))
    else:
        p_greater = 0.0 if mean > 0 else 1.0
        p_less = 0.0 if mean < 0 else 1.0
    return {"value": mean, "lo": mean - t * se, "hi": mean + t * se, "se": se, "n": n, "clusters": g,
            "design_effect": var / v_iid if v_iid and v_iid > 0 else nan,
            "p_greater": p_greater, "p_less": p_less}


def paired_role_difference(items_a: pd.DataFrame, items_b: pd.DataFrame, level: float = LEVEL) -> dict[str, Any]:
    """Delta P = P_A - P_B on the ambiguous items both role tables hold (:func:`~faro_core.fairness.role.
    role_items` of two runs' held-out scores), with its cluster-robust interval (clusters: ``cluster``,
    else ``item_id``).

    Returns :func:`cluster_mean_interval`'s keys plus ``p_a``, ``p_b`` (each run's P on the shared items),
    ``unit``, and ``estimand``. The two tables must hold the same ambiguous items (the same data, split and
    data seed): otherwise a :class:`FaroError` says how many differ."""
    def amb(items: pd.DataFrame) -> pd.DataFrame:
        a = items[items["x_dp"].notna()]
        cl = a["cluster"] if "cluster" in a else a["item_id"]
        return pd.DataFrame({"item_id": a["item_id"].astype(str).to_numpy(), "x": a["x_dp"].to_numpy(float),
                             "cluster": cl.astype(str).to_numpy()})

    a, b = amb(items_a), amb(items_b)
    if a.empty or b.empty:
        raise FaroError("no ambiguous held-out items with both a biased and a counter answer to compare")
    ids_a, ids_b = set(a["item_id"]), set(b["item_id"])
    if ids_a != ids_b:
        raise FaroError(f"the two runs were not scored on the same held-out items ({len(ids_a - ids_b)} only in "
                        f"the first, {len(ids_b - ids_a)} only in the second): compare runs of the same data, "
                        f"split and data seed")
    m = a.merge(b, on="item_id", suffixes=("_a", "_b"))
    res = cluster_mean_interval(m["x_a"].to_numpy() - m["x_b"].to_numpy(), m["cluster_a"].to_numpy(), level)
    unit = "template" if bool((m["cluster_a"] != m["item_id"]).any()) else "item"
    return {**res, "p_a": float(m["x_a"].mean()), "p_b": float(m["x_b"].mean()), "unit": unit,
            "estimand": ("questions from templates the model never saw" if unit == "template"
                         else "held-out items (their templates may also occur in training)")}


def paired_runs(run_a: Any, run_b: Any, split: str = "test") -> dict[str, Any]:
    """:func:`paired_role_difference` of two finished role runs on their ``split`` (``run_a`` minus
    ``run_b``; the runs' ids under ``a`` and ``b``)."""
    from faro_core.evaluate.metrics import load_split
    from faro_core.fairness.role_stats import role_items

    res = paired_role_difference(role_items(load_split(run_a, split)), role_items(load_split(run_b, split)))
    return {**res, "a": run_a.run_id, "b": run_b.run_id, "split": split}


def seed_level(values: Sequence[float], alternative: str = "greater", level: float = LEVEL) -> dict[str, Any]:
    """Seed-level summary of per-seed numbers (one per data draw): mean, its t interval (n - 1 df), and the
    one-sided t test of ``alternative`` (``greater``: mean > 0; ``less``: mean < 0) or the two-sided one
    (``two-sided``). Returns ``{"mean", "lo", "hi", "sd", "n", "t", "p", "alternative"}``."""
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))],
                   dtype=float)
    n = len(x)
    nan = float("nan")
    if n == 0:
        return {"mean": nan, "lo": nan, "hi": nan, "sd": nan, "n": 0, "t": nan, "p": nan, "alternative": alternative}
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "lo": nan, "hi": nan, "sd": nan, "n": 1, "t": nan, "p": nan, "alternative": alternative}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    if sd > 0:
        res = stats.ttest_1samp(x, 0.0, alternative=alternative)
        t, p = float(res.statistic), float(res.pvalue)
    else:
        t = math.copysign(math.inf, mean) if mean else nan
        p = float({"greater": mean <= 0, "less": mean >= 0}.get(alternative, mean == 0))
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "sd": sd, "n": n, "t": t, "p": p,
            "alternative": alternative}
