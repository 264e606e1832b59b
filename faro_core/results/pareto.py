"""Pareto fronts and hypervolumes of accuracy against a violation.

Front: per violation kind k, points (violation_k, accuracy); a point is on the front if no other point has
accuracy >= and violation <= with one strict. Hypervolume: the area dominated by the front inside the
reference box accuracy >= :data:`HV_REF_ACCURACY` (0.5, chance on pairwise preference) and violation <=
:data:`HV_REF_VIOLATION` (1.0, the largest possible DP/EO rate gap); points outside the box add nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from faro_core.fairness.kinds import KINDS
from faro_core.results.table import (
    CONSTRAINED_METHODS,
    aggregate,
    best_split,
    family_key,
    family_label,
    num_or_nan,
    split_columns,
)

HV_REF_ACCURACY = 0.5
HV_REF_VIOLATION = 1.0


def pareto_front(acc: np.ndarray, viol: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (maximize ``acc``, minimize ``viol``), sorted by violation."""
    acc, viol = np.asarray(acc, dtype=float), np.asarray(viol, dtype=float)
    ok = np.flatnonzero(~np.isnan(acc) & ~np.isnan(viol))
    keep = []
    for i in ok:
        dom = (acc[ok] >= acc[i]) & (viol[ok] <= viol[i]) & ((acc[ok] > acc[i]) | (viol[ok] < viol[i]))
        if not dom.any():
            keep.append(i)
    return np.array(sorted(keep, key=lambda i: (viol[i], -acc[i])), dtype=int)


def hypervolume(acc: np.ndarray, viol: np.ndarray, ref_acc: float = HV_REF_ACCURACY,
                ref_viol: float = HV_REF_VIOLATION) -> float:
    """Area dominated by the points within the box [ref_acc, 1] x [0, ref_viol] (2-D hypervolume)."""
    acc, viol = np.asarray(acc, dtype=float), np.asarray(viol, dtype=float)
    m = ~np.isnan(acc) & ~np.isnan(viol) & (acc > ref_acc) & (viol < ref_viol)
    if not m.any():
        return 0.0
    a, v = acc[m], np.clip(viol[m], 0.0, None)
    idx = pareto_front(a, v)
    a, v = a[idx], v[idx]  # violation ascending, accuracy ascending along the front
    edges = np.append(v[1:], ref_viol)
    return float(np.sum((edges - v) * (a - ref_acc)))


def pareto_summary(table: pd.DataFrame, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Per violation kind: each family's front (seed means) and hypervolume, and which baseline points
    Faro's front (``faro-<kind>``) does not dominate. An oracle's points (a method that reads what a
    deployed reward cannot know, :attr:`~faro_core.train.methods.Method.oracle`: the post-hoc shift) are
    reference points: they are listed under ``oracle_not_dominated_by_faro`` and do not count against
    ``faro_dominates_all``."""
    from faro_core.train.methods import METHODS

    if table.empty:
        return {}
    agg = aggregate(table)
    out: dict[str, Any] = {"reference": {"gold_accuracy": HV_REF_ACCURACY, "violation": HV_REF_VIOLATION}}
    acc_col = "gold_accuracy" if agg["gold_accuracy"].notna().any() else "accuracy"
    out["accuracy_column"] = acc_col
    for k in kinds:
        col = f"violation_{k}"
        if col not in agg or agg[col].isna().all():
            continue
        fams: dict[str, Any] = {}
        for fam, g in agg.groupby("family", sort=False):
            if g["method"].iloc[0] in CONSTRAINED_METHODS and g["constraint"].iloc[0] != k:
                continue
            idx = pareto_front(g[acc_col].to_numpy(), g[col].to_numpy())
            method = METHODS.get(str(g["method"].iloc[0]))
            fams[fam] = {
                "oracle": bool(method.oracle) if method else False,
                "hypervolume": hypervolume(g[acc_col].to_numpy(), g[col].to_numpy()),
                "front": [{"epsilon": num_or_nan(g["epsilon"].iloc[i]), "fixed_lambda": num_or_nan(g["fixed_lambda"].iloc[i]),
                           "accuracy": float(g[acc_col].iloc[i]), "violation": float(g[col].iloc[i])}
                          for i in idx],
            }
        faro = fams.get(f"faro-{k}")
        if faro:
            fa = np.array([p["accuracy"] for p in faro["front"]])
            fv = np.array([p["violation"] for p in faro["front"]])
            undominated, oracle = [], []
            for fam, f in fams.items():
                if fam == f"faro-{k}":
                    continue
                for p in f["front"]:
                    if not np.any((fa >= p["accuracy"]) & (fv <= p["violation"])):
                        (oracle if f["oracle"] else undominated).append({"family": fam, **p})
            out[k] = {"families": fams, "faro_dominates_all": not undominated, "not_dominated_by_faro": undominated,
                      "oracle_not_dominated_by_faro": oracle}
        else:
            out[k] = {"families": fams}
    return out


def pareto_mask(violation: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """[n] bool: True for the points :func:`pareto_front` keeps (no other point beats them on both axes)."""
    mask = np.zeros(len(np.asarray(violation)), dtype=bool)
    mask[pareto_front(accuracy, violation)] = True
    return mask


def pareto_points(table: pd.DataFrame, kind: str, split: str = "test") -> pd.DataFrame:
    """Accuracy vs ``kind`` violation on ``split`` per (family, ε), mean ± sd over seeds, finished runs.

    Columns: family, epsilon, violation, violation_sd, accuracy, accuracy_sd, n_seeds, run_ids,
    certified (all seeds certified; None when no certificate), on_front.
    Faro runs of other constraint kinds are left out; BT and baselines are kept as references.
    """
    vcol, accuracy = split_columns(split, kind)
    done = table[(table["status"] == "done") & table[vcol].notna() & table[accuracy].notna()]
    fam = done["family"]
    keep = ~fam.str.startswith("Faro-") | fam.str.contains(kind.upper())
    done = done[keep]
    if done.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    rows = []
    for (fam_, eps), g in done.groupby(["family", "epsilon"], dropna=False):
        certs = g["certified"].tolist()
        rows.append({"family": fam_, "epsilon": eps,
                     "violation": float(g[vcol].mean()),
                     "violation_sd": float(g[vcol].std(ddof=1)) if len(g) > 1 else 0.0,
                     "accuracy": float(g[accuracy].mean()),
                     "accuracy_sd": float(g[accuracy].std(ddof=1)) if len(g) > 1 else 0.0,
                     "n_seeds": len(g), "run_ids": list(g["run_id"]),
                     "certified": None if any(c is None or c != c for c in certs) else bool(all(certs))})
    pts = pd.DataFrame(rows).sort_values(["family", "epsilon"]).reset_index(drop=True)
    pts["on_front"] = pareto_mask(pts["violation"].to_numpy(), pts["accuracy"].to_numpy())
    return pts


POINT_COLUMNS = ["family", "epsilon", "violation", "violation_sd", "accuracy", "accuracy_sd", "n_seeds", "run_ids",
                 "certified", "on_front"]


def sweep_points(sweep_table: pd.DataFrame, kind: str, accuracy: str = "gold_accuracy") -> pd.DataFrame:
    """The columns of :func:`pareto_points` from a sweep table (one row per run, ``violation_<kind>``): seed
    means per configuration, with the 95% t-interval half-widths in the ``_sd`` columns; constrained methods'
    runs of another kind are left out; ``certified``: every seed certified for ``kind``."""
    agg = aggregate(sweep_table)
    vcol = f"violation_{kind}"
    keep = ~agg["method"].isin(CONSTRAINED_METHODS) | (agg["constraint"] == kind)
    agg = agg[keep].dropna(subset=[accuracy, vcol]).reset_index(drop=True)
    if agg.empty:
        return pd.DataFrame(columns=POINT_COLUMNS)
    ids = (sweep_table.assign(family=sweep_table.apply(family_key, axis=1)).groupby("family")["run_id"].apply(list)
           if "run_id" in sweep_table else pd.Series(dtype=object))
    share = agg.get(f"certified_{kind}_share", pd.Series(np.nan, index=agg.index))
    pts = pd.DataFrame({
        "family": [family_label({"method": m, "constraints": [] if c == "none" else [c], "epsilon": e})
                   for m, c, e in zip(agg["method"], agg["constraint"], agg["epsilon"])],
        "epsilon": agg["epsilon"], "violation": agg[vcol], "violation_sd": agg.get(f"{vcol}_ci"),
        "accuracy": agg[accuracy], "accuracy_sd": agg.get(f"{accuracy}_ci"), "n_seeds": agg["seeds"],
        "run_ids": [ids.get(f, []) for f in agg["family"]],
        "certified": [None if v != v else bool(v == 1.0) for v in share]})
    pts["on_front"] = pareto_mask(pts["violation"].to_numpy(), pts["accuracy"].to_numpy())
    return pts


def headline(table: pd.DataFrame) -> dict[str, Any]:
    """Plain-language numbers: BT vs the least-violating Faro run per kind (on :func:`best_split`)."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        split = best_split(table, kind)
        vcol, acol = split_columns(split, kind)
        ok = (table["status"] == "done") & table[vcol].notna() & table[acol].notna()
        bt = table[(table["family"] == "BT") & ok]
        faro = table[table["family"].str.contains(f"Faro-.*{kind.upper()}", regex=True) & ok]
        if bt.empty or faro.empty:
            continue
        b = bt.iloc[0]
        best = faro.sort_values([vcol, acol], ascending=[True, False]).iloc[0]
        out[kind] = {"split": split, "bt_run": b["run_id"], "bt_violation": float(b[vcol]),
                     "bt_accuracy": float(b[acol]), "faro_run": best["run_id"],
                     "faro_epsilon": float(best["epsilon"]), "faro_violation": float(best[vcol]),
                     "faro_accuracy": float(best[acol])}
    return out


def constraint_fronts(table: pd.DataFrame, split: str | None = None) -> pd.DataFrame:
    """The DP, EO and CF fronts in one long frame, for small multiples on one accuracy axis.

    One row per (kind, family, ε): :func:`pareto_points` of that kind (Faro runs of the kind, BT and the
    baselines as references) on ``split`` (default: :func:`best_split` per kind), plus the seed-mean
    violation of the *other* kinds by the same runs (``other_dp``, ``other_eo``, ``other_cf``; NaN where a
    run has none), so the cost of constraining one notion on the others is visible. Columns: kind, split and
    those of :func:`pareto_points`.
    """
    parts = []
    for kind in KINDS:
        s = split or best_split(table, kind)
        pts = pareto_points(table, kind, s)
        if pts.empty:
            continue
        pts = pts.assign(kind=kind, split=s)
        by_id = table.set_index("run_id")
        for other in KINDS:
            col = split_columns(s, other)[0]
            pts[f"other_{other}"] = [float(pd.to_numeric(by_id.loc[ids, col], errors="coerce").mean())
                                     for ids in pts["run_ids"]]
        parts.append(pts)
    if not parts:
        return pd.DataFrame(columns=["kind", "split", "family", "epsilon", "violation", "violation_sd", "accuracy",
                                     "accuracy_sd", "n_seeds", "run_ids", "certified", "on_front",
                                     *[f"other_{k}" for k in KINDS]])
    return pd.concat(parts, ignore_index=True)
