"""Reward-level evaluation with bootstrap intervals (DESIGN §7).

Everything works from a *scores frame*: one row per pair with the columns of a run's ``scores.parquet``
(``pair_id, item_id, r_chosen, r_rejected, cf_r_chosen, cf_r_rejected, order, group, chosen_group,
rejected_group, gold, stratum``). A run's held-out split is read from its ``scores.parquet`` (no
re-scoring); another source is scored with :func:`faro_core.models.load_scorer` (:func:`scores_for_data`).

Metrics (each with a seeded 95% BCa bootstrap interval from :mod:`faro_core.intervals`, resampling
*items*, so that the pairs of one BBQ item move together):

- ``accuracy``: share of pairs with r(chosen) > r(rejected) (observed labels);
- ``gold_accuracy``: the same against the gold label (pairs with a gold label only);
- ``ece`` (15 equal-width bins) and ``brier`` of p = sigma(r1 - r2), with the pair shown in its fixed
  random order (y1, y2) and y = 1 if y1 is the better response (gold where present, else observed), overall
  and per pair group through :class:`fairlearn.metrics.MetricFrame`;
- ``violation``: max one-sided violation per kind (dp, eo, cf) from :func:`faro_core.fairness.constraints.all_constraints`'s
  strict functions (the same code the trainer reports), kinds with no estimable cell left out.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from faro_core.data import load
from faro_core.errors import FaroError, RunError
from faro_core.fairness.attributes import attribute_strategy
from faro_core.fairness.chance import chance_violation
from faro_core.fairness.constraint_set import ConstraintSet, all_constraints
from faro_core.fairness.constraints import DEFAULT_MIN_COUNT
from faro_core.fairness.metrics import split_metrics
from faro_core.fairness.pairs import (
    GroupIndex,
    PairBatch,
    PairTensors,
    dp_strata_in_scope,
    order_bits,
    stratum_labels,
)
from faro_core.intervals import LEVEL, MAX_UNITS
from faro_core.models import load_scorer
from faro_core.store.runs import Run

N_BINS = 15
DEFAULT_BOOT = 200


# ---------------------------------------------------------------------------------------------------
# scores frame -> PairBatch
# ---------------------------------------------------------------------------------------------------
def index_from_frame(df: pd.DataFrame, dp_scope: str | None = None, dp_partner: bool = True) -> GroupIndex:
    """A :class:`GroupIndex` built from the groups and strata present in a scores frame.

    ``dp_scope`` is a run's DP scope (see :func:`~faro_core.fairness.pairs.dp_strata_in_scope`); it needs the
    frame's strata columns in ``df.attrs["strata_cols"]`` (set by :func:`scores_for_data`). ``dp_partner``:
    see :class:`~faro_core.fairness.constraints.DemographicParity`.
    """
    resp = sorted(set(df["chosen_group"].dropna()) | set(df["rejected_group"].dropna()))
    strata = sorted(df["stratum"].astype(str).unique()) if "stratum" in df else ["all"]
    cols = df.attrs.get("strata_cols")
    dp_strata = dp_strata_in_scope(df, list(cols), dp_scope) if cols and "stratum" in df else None
    return GroupIndex(response_groups=resp, pair_groups=sorted(set(df["group"].dropna())), strata=strata,
                      dp_strata=dp_strata, dp_partner=dp_partner)


def run_index(run: Run) -> GroupIndex:
    """The run's :class:`GroupIndex` (from ``constraints.json``, written at training time)."""
    c = run.read("constraints.json")
    if not c or "index" not in c:
        raise RunError(f"run {run.run_id!r} has no constraints.json (status: {run.status}); train it first")
    return GroupIndex(**c["index"])


def frame_to_batch(df: pd.DataFrame, index: GroupIndex) -> tuple[PairBatch, torch.Tensor]:
    """(PairBatch of the frame's N pairs, gold labels [N] with NaN where unknown).

    Uses the trainer's :class:`PairTensors` so codes, labels and order bits match training exactly.
    """
    df = df.reset_index(drop=True)
    if "stratum" not in df:
        df = df.assign(stratum="all")
    twin = df["cf_r_chosen"].notna() & df["cf_r_rejected"].notna()
    tmp = df.assign(cf_chosen=np.where(twin, "x", None), cf_rejected=np.where(twin, "x", None),
                    cf_prompt=np.where(twin, "x", None))
    tens = PairTensors.from_frame(tmp, index)
    if "order" in df:
        tens.order = torch.from_numpy(df["order"].to_numpy(dtype=np.int64).copy())
    idx = torch.arange(len(df))

    def col(name: str) -> torch.Tensor:
        return torch.from_numpy(df[name].to_numpy(dtype=np.float32).copy())

    batch = tens.batch(idx, (col("r_chosen"), col("r_rejected"), col("cf_r_chosen"), col("cf_r_rejected")))
    gold = torch.as_tensor(df["gold"].to_numpy(dtype=np.float32)) if "gold" in df else torch.full(
        (len(df),), float("nan"))
    return batch, gold


def load_split(run: Run, split: str = "test") -> pd.DataFrame:
    """Rows of ``scores.parquet`` of one split (``test``, ``val``, ``train`` or ``all``)."""
    path = run.file("scores.parquet")
    if not path.exists():
        raise RunError(f"run {run.run_id!r} has no scores.parquet (status: {run.status}); it has not finished")
    df = pd.read_parquet(path)
    if split != "all":
        df = df[df["split"] == split]
    if df.empty:
        raise FaroError(f"run {run.run_id!r}: split {split!r} is empty")
    df = df.reset_index(drop=True)
    df.attrs["split_by"] = (run.config or {}).get("split_by") or "item"
    return df


def scores_for_data(run: Run, source: str, format: str | None = None, group: str | None = None,
                    limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Score another data source with the run's model; returns a scores frame (all its pairs).

    ``limit`` keeps a seeded random subset of that many pairs (CPU budget for large sources).
    """
    data = load(source, format=format, group=group)
    df = data.df.reset_index(drop=True)
    if limit is not None and len(df) > limit:
        df = df.sample(n=limit, random_state=seed).reset_index(drop=True)
    strata_cols = [c for c in data.strata if c in df]
    df["stratum"] = stratum_labels(df, strata_cols)
    scorer = load_scorer(run, device="cpu")
    st = list(df["stratum"])
    r_c = scorer.score(df["prompt"], df["chosen"], response_groups=list(df["chosen_group"]), strata=st)
    r_r = scorer.score(df["prompt"], df["rejected"], response_groups=list(df["rejected_group"]), strata=st)
    cf_c = np.full(len(df), np.nan, dtype=np.float32)
    cf_r = cf_c.copy()
    twin = (df["cf_prompt"].notna() & df["cf_chosen"].notna() & df["cf_rejected"].notna()).to_numpy()
    if twin.any():
        tw = df[twin]
        cf_c[twin] = scorer.score(tw["cf_prompt"], tw["cf_chosen"])
        cf_r[twin] = scorer.score(tw["cf_prompt"], tw["cf_rejected"])
    out = df.drop(columns=["prompt", "chosen", "rejected", "cf_prompt", "cf_chosen", "cf_rejected"])
    out = out.assign(r_chosen=r_c, r_rejected=r_r, cf_r_chosen=cf_c, cf_r_rejected=cf_r,
                     order=order_bits(df["pair_id"]), split="external")
    out.attrs["strata_cols"] = strata_cols
    return out


# ---------------------------------------------------------------------------------------------------
# calibration (fairlearn MetricFrame)
# ---------------------------------------------------------------------------------------------------
def ece_score(y_true: np.ndarray, y_prob: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error: sum_b (n_b / n) |mean(y in b) - mean(p in b)|, equal-width bins on [0, 1]."""
    y_true, y_prob = np.asarray(y_true, dtype=float), np.asarray(y_prob, dtype=float)
    if len(y_true) == 0:
        return float("nan")
    b = np.clip((y_prob * n_bins).astype(int), 0, n_bins - 1)
    cnt = np.bincount(b, minlength=n_bins)
    sy = np.bincount(b, weights=y_true, minlength=n_bins)
    sp = np.bincount(b, weights=y_prob, minlength=n_bins)
    m = cnt > 0
    return float(np.sum(np.abs(sy[m] - sp[m])) / len(y_true))


def brier_score(y_true: np.ndarray, y_prob: np.ndarray) -> float:
    """Mean squared error of the probability, (1/n) sum (p - y)^2 (:func:`sklearn.metrics.brier_score_loss`);
    NaN on no pairs."""
    from sklearn.metrics import brier_score_loss

    y_true, y_prob = np.asarray(y_true, dtype=float), np.asarray(y_prob, dtype=float)
    return float(brier_score_loss(y_true, y_prob)) if len(y_true) else float("nan")


def calibration_inputs(batch: PairBatch, gold: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y [N], p [N], keep [N] bool): pair in its random order, y = 1 if y1 is better (gold, else observed)."""
    d = (batch.r_chosen - batch.r_rejected).double().numpy()
    flip = batch.order.numpy().astype(bool)
    label = gold.double().numpy()
    label = np.where(np.isnan(label), 1.0, label) if np.isnan(label).all() else label
    keep = ~np.isnan(label)
    score = np.where(flip, -d, d)
    y = np.where(flip, 1.0 - label, label)
    p = 1.0 / (1.0 + np.exp(-np.clip(score, -60, 60)))
    return y, p, keep


def calibration(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """ECE and Brier overall and per group, via :class:`fairlearn.metrics.MetricFrame`."""
    from fairlearn.metrics import MetricFrame

    if len(y) == 0:
        return {"ece": float("nan"), "brier": float("nan"), "by_group": {}}
    mf = MetricFrame(metrics={"ece": ece_score, "brier": brier_score}, y_true=y, y_pred=p,
                     sensitive_features=pd.Series(groups, name="group"))
    by = mf.by_group
    return {"ece": float(mf.overall["ece"]), "brier": float(mf.overall["brier"]),
            "by_group": {str(g): {"ece": float(by.loc[g, "ece"]), "brier": float(by.loc[g, "brier"])}
                         for g in by.index}}


# ---------------------------------------------------------------------------------------------------
# point metrics and bootstrap
# ---------------------------------------------------------------------------------------------------
def point_metrics(batch: PairBatch, gold: torch.Tensor, measure: ConstraintSet,
                  groups: np.ndarray, with_calibration: bool = True) -> dict[str, Any]:
    """Flat dict of metrics on one batch: accuracy, gold_accuracy, violation_<kind>, ece, brier, ece[g], brier[g]."""
    m = split_metrics(batch, ConstraintSet([]), measure, gold)
    out: dict[str, Any] = {"accuracy": m["accuracy"], "gold_accuracy": m.get("gold_accuracy", float("nan"))}
    for k in ("dp", "eo", "cf"):
        out[f"violation_{k}"] = m["violation"].get(k, float("nan"))
    if "cf_flip_rate" in m:
        out["cf_flip_rate"] = m["cf_flip_rate"]
    if with_calibration:
        y, p, keep = calibration_inputs(batch, gold)
        cal = calibration(y[keep], p[keep], groups[keep])
        out["ece"], out["brier"] = cal["ece"], cal["brier"]
        for g, v in cal["by_group"].items():
            out[f"ece[{g}]"], out[f"brier[{g}]"] = v["ece"], v["brier"]
    return out


def _subset(batch: PairBatch, idx: np.ndarray, copy: np.ndarray | None = None) -> PairBatch:
    """The batch's rows ``idx``; with ``copy`` (the drawn copy of each row's item, as
    :func:`faro_core.intervals.cluster_bootstrap` numbers them) each drawn copy of a role item gets its
    own item code."""
    t = torch.as_tensor(idx, dtype=torch.long)
    out = PairBatch(*(None if getattr(batch, f) is None else getattr(batch, f)[t] for f in batch.__dataclass_fields__))
    if out.role_item is not None and copy is not None:
        # a cluster (a template) holds many items: each (drawn copy, item) gets its own code
        c = torch.as_tensor(copy, dtype=torch.long)
        k = int(batch.role_item.max()) + 1 if len(batch.role_item) else 1
        out.role_item = torch.where(out.role_item >= 0, c * k + out.role_item, out.role_item)
    return out


def cluster_column(df: pd.DataFrame) -> tuple[np.ndarray, str]:
    """(cluster of each row, unit name): the split unit's ``cluster`` column where the scores frame has one
    (runs trained since split units exist), else ``item_id`` (older runs, split by item)."""
    if "cluster" in df.columns and df["cluster"].notna().all():
        return df["cluster"].astype(str).to_numpy(), str(df.attrs.get("split_by") or "cluster")
    return df["item_id"].astype(str).to_numpy(), "item"


def evaluate_frame(df: pd.DataFrame, index: GroupIndex, min_count: int = DEFAULT_MIN_COUNT, n_boot: int = DEFAULT_BOOT,
                   seed: int = 0, with_calibration: bool = True, n_perm: int = 200) -> dict[str, Any]:
    """All metrics of a scores frame with bootstrap intervals, and the chance level of the DP/EO violations.

    Returns ``{"pairs", "items", "metrics": {name: {"value", "lo", "hi"}}, "by_group": {group: {...}},
    "bootstrap": {"n", "seed", "level", "unit", "clusters"}, "chance": {kind: {"observed", "chance_median",
    "chance_p90", "p_value", "n_perm"}}}`` (``chance``: :func:`faro_core.fairness.chance.chance_violation`,
    left out when ``n_perm`` is 0).
    """
    batch, gold = frame_to_batch(df, index)
    measure = all_constraints(index, min_count)
    groups = df["group"].fillna("(none)").astype(str).to_numpy()
    from faro_core.intervals import cluster_bootstrap

    point = point_metrics(batch, gold, measure, groups, with_calibration)

    def on_rows(idx: np.ndarray, copy: np.ndarray) -> dict[str, float]:
        return point_metrics(_subset(batch, idx, copy), gold[torch.as_tensor(idx, dtype=torch.long)], measure,
                             groups[idx], with_calibration)

    clusters, unit = cluster_column(df)
    metrics = cluster_bootstrap(on_rows, clusters, point, n_boot, seed, LEVEL)
    flat = {k: v for k, v in metrics.items() if "[" not in k}
    by_group: dict[str, dict[str, Any]] = {}
    for k, v in metrics.items():
        if "[" in k:
            name, g = k[:-1].split("[", 1)
            by_group.setdefault(g, {})[name] = v
    for g, sub in df.groupby(df["group"].fillna("(none)").astype(str)):
        d = sub["r_chosen"].to_numpy() - sub["r_rejected"].to_numpy()
        by_group.setdefault(str(g), {})["pairs"] = int(len(sub))
        by_group[str(g)]["accuracy"] = float(np.mean(d > 0))
    out = {"pairs": int(len(df)), "items": int(df["item_id"].nunique()), "metrics": flat, "by_group": by_group,
           "bootstrap": {"n": int(n_boot), "seed": int(seed), "level": LEVEL, "unit": unit,
                         "clusters": int(len(set(clusters))),
                         "method": "BCa (scipy.stats.bootstrap)", "max_units": MAX_UNITS}}
    attribute = attribute_strategy(index.attribute)
    if attribute.per_item:  # the item table's violations, stored under "role"
        from faro_core.fairness.chance import ROLE_PERM, role_chance

        out["role"] = attribute.report(df, n_boot=n_boot, seed=seed)
        if n_perm:  # within-item role swaps; enough permutations that p < 0.01 is resolvable
            out["chance"] = role_chance(attribute.items(df), n_perm=max(n_perm, ROLE_PERM), seed=seed)
    elif n_perm:
        out["chance"] = chance_violation(batch, index, min_count=min_count, n_perm=n_perm, seed=seed)
    return out


def evaluate_run(run: Run, data: str | None = None, format: str | None = None, split: str = "test",
                 n_boot: int = DEFAULT_BOOT, seed: int = 0, limit: int | None = None,
                 write: bool = True) -> dict[str, Any]:
    """Evaluate a finished run on its held-out split (default) or on another source; writes ``eval.json``.

    With ``data`` the source is scored with the run's model and evaluated against its own groups; the
    result is stored under ``eval.json``'s ``"external"`` key by source name (the held-out result stays).
    """
    t0 = time.perf_counter()
    cfg = run.config
    min_count = int(cfg.get("min_count", DEFAULT_MIN_COUNT))
    if data is None:
        df = load_split(run, split)
        index = run_index(run)
        where = {"split": split}
    else:
        df = scores_for_data(run, data, format=format, limit=limit, seed=seed)
        index = index_from_frame(df, dp_scope=cfg.get("dp_scope"), dp_partner=cfg.get("dp_partner", True))
        where = {"data": str(data), "format": format}
    res = evaluate_frame(df, index, min_count=min_count, n_boot=n_boot, seed=seed)
    res.update(run_id=run.run_id, method=cfg.get("method", "faro"), constraints=cfg.get("constraints"),
               epsilon=cfg.get("epsilon"), seed=cfg.get("seed"), seconds=round(time.perf_counter() - t0, 3),
               **where)
    if write:
        prev = run.read("eval.json", {}) or {}
        if data is None:
            out = {**res, "external": prev.get("external", {})}
        else:
            out = {**prev, "external": {**prev.get("external", {}), str(data): res}}
        run.write("eval.json", out)
    return res


def headline(res: dict[str, Any]) -> dict[str, float]:
    """Flat {metric: value} of an :func:`evaluate_frame` result (for tables)."""
    return {k: v["value"] for k, v in res["metrics"].items() if not (isinstance(v["value"], float)
                                                                       and math.isnan(v["value"]))}
