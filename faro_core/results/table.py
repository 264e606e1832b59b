"""The run tables every view reads: one row per run, its family, and seed aggregates.

Two tables, one set of names:

- the *sweep table* (:func:`table_row`, from ``eval.json`` and the certificates: bootstrap intervals) and the
  quick *metrics table* (:func:`metrics_row`, from ``metrics.json``), written to ``sweep.csv`` /
  ``sweep.parquet``; columns ``violation_<kind>`` with ``_lo`` / ``_hi``;
- the *run table* (:func:`run_table`, every run of a store, for the dashboard and the report), columns
  ``violation_<kind>``, ``val_violation_<kind>``, ``train_violation_<kind>``; the older names
  ``viol_<kind>``, ``val_viol_<kind>``, ``train_viol_<kind>`` are kept as aliases.

A run's *family key* (:func:`family_key`: ``faro-dp``, ``bt``, ``fixed_lambda-eo``) names it in files
(``pareto.json``); its *family label* (:func:`family_label`: ``Faro-DP``, ``BT``, ``Fixed λ``) names it on
screen. Both come from the method registry (:mod:`faro_core.train.methods`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from faro_core.fairness.attributes import is_per_item
from faro_core.fairness.kinds import KINDS
from faro_core.store.runs import Run, RunStore
from faro_core.train import methods

# Methods whose runs target one constraint kind (a front of kind k shows only their runs for k).
CONSTRAINED_METHODS = tuple(m.name for m in methods.METHODS.values() if m.constrained)
# Methods whose runs are told apart by their fixed multiplier, not by epsilon.
FIXED_LAMBDA_METHODS = tuple(m.name for m in methods.METHODS.values() if m.fixed_lambda)


def method_label(cfg: dict[str, Any]) -> str:
    """The method column of a run: its registry name (:func:`faro_core.train.methods.method_of`)."""
    return methods.method_of(cfg)


def family_label(cfg: dict[str, Any]) -> str:
    """Display family of a run: ``BT``, ``Faro-DP``, ``Faro-DP+CF``, or the method's label
    (:func:`faro_core.train.method_spec.display_label`)."""
    return methods.display_label({**cfg, "method": cfg.get("method") or methods.PRIMARY})


def family_color(cfg: dict[str, Any]) -> str:
    """The colour of a run's family in every figure (:func:`faro_core.train.method_spec.display_color`)."""
    return methods.display_color({**cfg, "method": cfg.get("method") or methods.PRIMARY})


def family_key(row: dict[str, Any] | pd.Series) -> str:
    """Method family of a table row: ``faro-dp``, ``bt``, ``fixed_lambda-eo``, ``expgrad-dp``, ..."""
    m, c = row["method"], row["constraint"]
    return f"{m}-{c}" if c and c != "none" else m


def config_columns(run: Any) -> dict[str, Any]:
    """The sweep-table columns that identify a run: id, name, method, constraint, epsilon, lambda, seed, status."""
    cfg = run.config
    eps = cfg.get("epsilon")
    return {
        "run_id": run.run_id, "name": cfg.get("name"), "method": method_label(cfg),
        "constraint": ",".join(cfg.get("constraints") or []) or "none",
        "epsilon": float(eps) if eps is not None else math.inf, "fixed_lambda": cfg.get("fixed_lambda"),
        "seed": cfg.get("seed"), "status": run.status, "attribute": cfg.get("attribute") or "group",
        "data_seed": cfg.get("data_seed", 0), "skew": cfg.get("skew", 0.0), "split_by": cfg.get("split_by") or "item",
    }


ROLE_TABLE_KEYS = ("p_biased_over_counter", "rate_biased_vs_unknown", "rate_counter_vs_unknown", "acc_biased",
                   "acc_counter", "dp_gap", "eo_gap", "n_dp", "n_biased", "n_counter")


def table_row(run: Any) -> dict[str, Any]:
    """One sweep-table row from a run's config, eval.json and certificates."""
    ev = run.read("eval.json", {}) or {}
    cert = run.read("certificate.json", {}) or {}
    byk = run.read("certificates_by_kind.json", {}) or {}
    m = ev.get("metrics", {})
    row: dict[str, Any] = {**config_columns(run), "train_seconds": _train_seconds(run)}
    for k in ("accuracy", "gold_accuracy", "ece", "brier", "violation_dp", "violation_eo", "violation_cf"):
        v = m.get(k, {})
        row[k] = num_or_nan(v.get("value"))
        row[f"{k}_lo"], row[f"{k}_hi"] = num_or_nan(v.get("lo")), num_or_nan(v.get("hi"))
    row["certified"] = cert.get("certified")
    row["cert_epsilon"] = cert.get("epsilon")
    row["cert_max_upper"] = num_or_nan(cert.get("max_upper"))
    for k in KINDS:
        c = byk.get(k, {})
        row[f"certified_{k}"] = c.get("certified")
        row[f"upper_{k}"] = num_or_nan(c.get("max_upper"))
    role = ev.get("role") or {}  # attribute role: the raw rates behind violation_dp / violation_eo, and the gaps
    for k in ROLE_TABLE_KEYS:
        row[f"role_{k}"] = num_or_nan(role.get(k))
    for k in ("dp", "eo"):  # the violation a reward ignoring the group would show on this split, and the p-value
        ch = (ev.get("chance") or {}).get(k, {})
        row[f"chance_{k}"] = num_or_nan(ch.get("chance_median"))
        row[f"chance_p_{k}"] = num_or_nan(ch.get("p_value"))
    return row


def num_or_nan(v: Any) -> float:
    return float(v) if v is not None else float("nan")


def _train_seconds(run: Any) -> float:
    st = run.raw_status()
    if st.get("started") and st.get("finished"):
        return round(float(st["finished"]) - float(st["started"]), 3)
    return float("nan")


def metrics_row(run: Any) -> dict[str, Any]:
    """A sweep-table row from a run's config and ``metrics.json`` (test-split point estimates, no intervals)."""
    m = run.read("metrics.json", {}) or {}
    test = m.get("test", {}) or {}
    row: dict[str, Any] = {**config_columns(run), "accuracy": test.get("accuracy", math.nan),
                           "gold_accuracy": test.get("gold_accuracy", math.nan)}
    for k in KINDS:
        row[f"violation_{k}"] = (test.get("violation") or {}).get(k, math.nan)
    return row


def certificate_summary(run: Run) -> dict[str, Any] | None:
    """``{"certified": bool|None, "epsilon": ..., "bounds": {...}}`` from ``certificate.json``, or None."""
    cert = run.read("certificate.json")
    if not isinstance(cert, dict):
        return None
    certified = cert.get("certified")
    if certified is None and isinstance(cert.get("constraints"), list):
        ok = [c.get("certified") for c in cert["constraints"] if isinstance(c, dict)]
        certified = all(ok) if ok and None not in ok else None
    return {"certified": certified, "epsilon": cert.get("epsilon"), "delta": cert.get("delta"), "raw": cert}


def run_table(store: RunStore) -> pd.DataFrame:
    """One row per run: id, status, family, ε, seed, test accuracy / gold accuracy / violations, files."""
    rows = []
    for run in store.list():
        cfg = run.read("config.json", {}) or {}
        m = run.metrics() or {}
        test = m.get("test") or {}
        viol = test.get("violation") or {}
        cert = certificate_summary(run)
        eps = cfg.get("epsilon")
        if methods.is_reference({**cfg, "method": cfg.get("method") or methods.PRIMARY}):
            eps = None  # unconstrained: ε = ∞ whatever the config's default says
        rows.append({
            "run_id": run.run_id, "status": run.status, "family": family_label(cfg),
            "method": cfg.get("method", "faro"), "constraints": ",".join(cfg.get("constraints") or []) or "none",
            "epsilon": float("inf") if eps is None else float(eps), "seed": cfg.get("seed", 0),
            "sweep": cfg.get("sweep"), "mode": cfg.get("mode"), "epochs": cfg.get("epochs"),
            "accuracy": test.get("accuracy", m.get("accuracy")),
            "gold_accuracy": test.get("gold_accuracy", m.get("gold_accuracy")),
            **{f"violation_{k}": viol.get(k) for k in KINDS},
            **{f"val_violation_{k}": (m.get("violation") or {}).get(k) for k in KINDS},
            **{f"train_violation_{k}": ((m.get("train") or {}).get("violation") or {}).get(k) for k in KINDS},
            "val_accuracy": m.get("accuracy"), "train_accuracy": (m.get("train") or {}).get("accuracy"),
            "cf_flip_rate": test.get("cf_flip_rate"),
            "feasible": m.get("feasible"), "selected_by": m.get("selected_by"),
            "certified": None if cert is None else cert["certified"],
            "has_policy": run.file("policy.json").exists(),
            "has_generations": run.file("policy_generations.parquet").exists(),
            "error": run.raw_status().get("error"),
        })
    cols = ["run_id", "status", "family", "method", "constraints", "epsilon", "seed", "sweep", "mode", "epochs",
            "accuracy", "gold_accuracy", *[f"{s}violation_{k}" for s in ("", "val_", "train_") for k in KINDS],
            "val_accuracy", "train_accuracy",
            "cf_flip_rate", "feasible", "selected_by", "certified", "has_policy", "has_generations", "error"]
    table = pd.DataFrame(rows, columns=cols)
    for split in ("", "val_", "train_"):  # the names before the tables were unified, kept as aliases
        for k in KINDS:
            table[f"{split}viol_{k}"] = table[f"{split}violation_{k}"]
    return table


def split_columns(split: str, kind: str) -> tuple[str, str]:
    """(violation column, accuracy column) of :func:`run_table` for a split (test | val | train)."""
    if split == "test":
        return f"violation_{kind}", "accuracy"
    return f"{split}_violation_{kind}", f"{split}_accuracy"


def best_split(table: pd.DataFrame, kind: str) -> str:
    """The first of test, val, train on which some finished run has a ``kind`` violation (small held-out
    splits can leave every group cell under ``min_count``, hence unestimated)."""
    for split in ("test", "val", "train"):
        col = split_columns(split, kind)[0]
        if col in table and table.loc[table["status"] == "done", col].notna().any():
            return split
    return "test"


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval half-width over seeds per configuration (family, epsilon, fixed_lambda)."""
    from scipy import stats  # function-level: scipy is only needed here, and the run table must stay light

    t = table.assign(family=table.apply(family_key, axis=1))
    keys = ["family", "method", "constraint", "epsilon", "fixed_lambda"]
    t["fixed_lambda"] = t["fixed_lambda"].where(t["method"].isin(FIXED_LAMBDA_METHODS), np.nan)
    num = [c for c in t.columns if c not in keys and pd.api.types.is_numeric_dtype(t[c])
           and not c.endswith(("_lo", "_hi")) and c not in ("seed", "data_seed")]
    rows = []
    for k, g in t.groupby(keys, dropna=False, sort=False):
        r = dict(zip(keys, k))
        r["seeds"] = len(g)
        for c in num:
            v = g[c].astype(float).dropna().to_numpy()
            r[c] = float(v.mean()) if len(v) else float("nan")
            r[f"{c}_ci"] = (float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
                            if len(v) > 1 else float("nan"))
        for c in [c for c in t.columns if c.startswith("certified")]:
            vals = [bool(x) for x in g[c] if x is not None and x == x]
            r[f"{c}_share"] = float(np.mean(vals)) if vals else float("nan")
        rows.append(r)
    return pd.DataFrame(rows)


def add_paired_vs_bt(table: pd.DataFrame, store: RunStore) -> pd.DataFrame:
    """The table with ``dP_vs_bt`` (and ``_lo``, ``_hi``): for each finished role run, P_BT - P_run on the same
    held-out items, with its cluster-robust interval (:func:`faro_core.evaluate.paired.paired_runs`), against
    the BT run of the same data draw (data seed, skew) and training seed; NaN where there is none."""
    from faro_core.errors import FaroError
    from faro_core.evaluate.paired import paired_runs

    out = table.copy()
    for c in ("dP_vs_bt", "dP_vs_bt_lo", "dP_vs_bt_hi"):
        out[c] = float("nan")
    if out.empty or "attribute" not in out:
        return out
    done = out[(out["status"] == "done") & out["attribute"].map(is_per_item).astype(bool)]
    is_bt = done["method"] == methods.REFERENCE  # the sweep table's method column: the registry name as configured
    bt = done[is_bt]
    for i, r in done[~is_bt].iterrows():
        match = bt[(bt["data_seed"] == r["data_seed"]) & (bt["skew"] == r["skew"]) & (bt["seed"] == r["seed"])]
        if match.empty:
            continue
        try:
            d = paired_runs(store.get(match.iloc[0]["run_id"]), store.get(r["run_id"]))
        except FaroError:
            continue
        out.loc[i, ["dP_vs_bt", "dP_vs_bt_lo", "dP_vs_bt_hi"]] = [d["value"], d["lo"], d["hi"]]
    return out


def markdown_table(agg: pd.DataFrame) -> str:
    """Markdown table of seed-aggregated rows: mean ± 95% CI half-width over seeds. Role runs add the signed
    P(r_biased > r_counter) and the paired ΔP against BT (:func:`add_paired_vs_bt`)."""
    cols = ["gold_accuracy", "accuracy", "violation_dp", "violation_eo", "violation_cf", "ece"]
    for extra in ("role_p_biased_over_counter", "dP_vs_bt"):
        if extra in agg and agg[extra].notna().any():
            cols.append(extra)
    head = "| model | eps | seeds | " + " | ".join(cols) + " | certified (dp/eo/cf) |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for _, r in agg.iterrows():
        eps = "" if not math.isfinite(r["epsilon"]) else f"{r['epsilon']:g}"
        if r["method"] in FIXED_LAMBDA_METHODS:
            eps = f"λ={r['fixed_lambda']:g}"
        cells = [_pm(r.get(c), r.get(f"{c}_ci")) for c in cols]
        cert = "/".join(_share(r.get(f"certified_{k}_share")) for k in KINDS)
        lines.append(f"| {r['family']} | {eps} | {r['seeds']} | " + " | ".join(cells) + f" | {cert} |")
    return "\n".join(lines)


def _pm(v: Any, ci: Any) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:.3f}" if ci is None or ci != ci else f"{v:.3f} ± {ci:.3f}"


def _share(v: Any) -> str:
    return "–" if v is None or v != v else f"{v:.0%}"


def cross_violations(table: pd.DataFrame) -> pd.DataFrame:
    """Every finished run's held-out violation of each kind (DP, EO, CF), whatever it was trained for:
    columns run_id, family, epsilon, seed, accuracy, viol_dp, viol_eo, viol_cf (test split; the
    ``violation_<kind>`` columns under their short aliases)."""
    done = table[table["status"] == "done"]
    return done[["run_id", "family", "epsilon", "seed", "accuracy", *[f"viol_{k}" for k in KINDS]]].reset_index(
        drop=True)
