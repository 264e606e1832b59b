"""Sweeps: a grid of trainings (constraint kind x epsilon x seed, plus baselines), run in parallel into one
run store, then evaluated, certified, tabulated, with the Pareto front and its hypervolume.

Run ids are deterministic (``<name>-s<seed>-<10 hex of the SHA-1 of the resolved config>``), so running the
same sweep again skips every run that is already done (and evaluated), resumes interrupted ones from their
checkpoint and retrains failed ones. Executors: ``local`` (:class:`concurrent.futures.ProcessPoolExecutor`,
spawned processes, one torch thread each) or ``ray`` (optional extra ``faro[ray]``; a local Ray instance
unless ``RAY_ADDRESS`` is set). Both write to the same run store.

Pareto front: per violation kind k, points (violation_k on the test split, gold accuracy), both averaged over
seeds per configuration; a point is on the front if no other point has accuracy >= and violation <= with
one strict. Hypervolume: the area dominated by the front inside the reference box
accuracy >= :data:`HV_REF_ACCURACY` (0.5, chance on pairwise preference) and violation <= :data:`HV_REF_VIOLATION`
(1.0, the largest possible DP/EO rate gap); points outside the box add nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import FaroError
from faro_core.io import write_json, write_parquet
from faro_core.runs import RUN_ID_RE, RunStore
from faro_core.train.config import LEGACY_DEFAULTS, FaroConfig

HV_REF_ACCURACY = 0.5
HV_REF_VIOLATION = 1.0
KINDS = ("dp", "eo", "cf")
SWEEPS_DIR = "_sweeps"


# ---------------------------------------------------------------------------------------------------
# grid
# ---------------------------------------------------------------------------------------------------
@dataclass
class SweepSpec:
    """What to sweep. ``base`` holds data/model settings shared by every run (a FaroConfig)."""

    base: FaroConfig
    kinds: list[str] = field(default_factory=lambda: ["dp"])
    epsilons: list[float] = field(default_factory=lambda: [0.1, 0.05])
    seeds: list[int] = field(default_factory=lambda: [0])
    baselines: list[str] = field(default_factory=list)
    name: str = "sweep"
    n_boot: int = 100
    delta: float = 0.05
    certify_epsilon: float = 0.05


# Methods whose runs target one constraint kind (a front of kind k shows only their runs for k).
CONSTRAINED_METHODS = ("faro", "fixed_lambda", "expgrad", "expgrad_head")
# Config fields added after sweeps were run, with the default that reproduces the older behaviour. Left out of the
# run-id hash at that default, so adding an option does not orphan every finished run of a sweep.
HASH_OPTIONAL: dict[str, object] = LEGACY_DEFAULTS


def run_id_for(config: FaroConfig) -> str:
    """Deterministic run id from the resolved config (the ``sweep`` tag and ``run_id`` are not part of it)."""
    d = config.resolved().to_dict()
    for k in ("sweep", "run_id"):
        d.pop(k, None)
    for k, default in HASH_OPTIONAL.items():  # options added later: at their defaults, old sweeps still resume
        if d.get(k) == default:
            d.pop(k, None)
    h = hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{d['name']}-s{d['seed']}-{h}"


def grid(spec: SweepSpec) -> list[FaroConfig]:
    """Every config of the sweep: Faro on kind x epsilon x seed, then the baselines."""
    from faro_core.baselines import baseline_configs

    bad = [k for k in spec.kinds if k not in KINDS]
    if bad:
        raise FaroError(f"unknown constraint kind(s) {bad}; choose from {', '.join(KINDS)}")
    d = spec.base.to_dict()
    d.pop("name", None)
    out = [FaroConfig(**{**d, "method": "faro", "constraints": [k], "epsilon": e, "seed": s, "sweep": spec.name})
           for k in spec.kinds for e in spec.epsilons for s in spec.seeds]
    for c in baseline_configs(spec.base, spec.baselines, spec.kinds, spec.epsilons, spec.seeds):
        c.sweep = spec.name
        out.append(c)
    return out


# ---------------------------------------------------------------------------------------------------
# one job (runs in a worker process)
# ---------------------------------------------------------------------------------------------------
def run_job(config_dict: dict[str, Any], runs_dir: str, n_boot: int = 100, delta: float = 0.05,
            certify_epsilon: float = 0.05) -> dict[str, Any]:
    """Train (unless done), evaluate and certify one config; returns its sweep-table row.

    ``skipped`` in the row is True when the run was already done and evaluated (nothing recomputed).
    """
    import torch

    from faro_core.evaluate.certify import certify_run
    from faro_core.evaluate.metrics import evaluate_run
    from faro_core.train import train

    torch.set_num_threads(int(os.environ.get("FARO_WORKER_THREADS", "1")))
    store = RunStore(runs_dir)
    config = FaroConfig.from_dict(config_dict)
    rid = run_id_for(config)
    t0 = time.perf_counter()
    skipped = False
    if store.has(rid) and store.get(rid).status == "done":
        run = store.get(rid)
        skipped = run.file("eval.json").exists() and run.file("certificate.json").exists()
    elif store.has(rid) and store.get(rid).status == "interrupted" and store.get(rid).file("checkpoint").exists():
        run = train(None, store, run_id=rid, resume=True, progress=False)
    else:
        if store.has(rid):  # failed, queued or interrupted without checkpoint: start over
            shutil.rmtree(store.path(rid))
        run = train(config, store, run_id=rid, progress=False)
    if not skipped:
        evaluate_run(run, n_boot=n_boot)
        kinds = list(config.constraints) or list(KINDS)
        eps = config.epsilon if math.isfinite(config.epsilon) else certify_epsilon
        certify_run(run, delta=delta, epsilon=eps, kinds=kinds)
        run.write("certificates_by_kind.json", {
            k: certify_run(run, delta=delta, epsilon=certify_epsilon, kinds=[k], write=False) for k in KINDS})
    row = table_row(run)
    row.update(skipped=skipped, job_seconds=round(time.perf_counter() - t0, 3))
    return row


def method_label(cfg: dict[str, Any]) -> str:
    """The method column of a run: its config's ``method``, with ``expgrad_head`` for the ExponentiatedGradient
    baseline that fits the MLP head (a different model class from ``expgrad``'s logistic regression)."""
    method = cfg.get("method", "faro")
    if method == "expgrad" and cfg.get("expgrad_base") == "head":
        return "expgrad_head"
    return method


def config_columns(run: Any) -> dict[str, Any]:
    """The sweep-table columns that identify a run: id, name, method, constraint, epsilon, lambda, seed, status."""
    cfg = run.config
    eps = cfg.get("epsilon")
    return {
        "run_id": run.run_id, "name": cfg.get("name"), "method": method_label(cfg),
        "constraint": ",".join(cfg.get("constraints") or []) or "none",
        "epsilon": float(eps) if eps is not None else math.inf, "fixed_lambda": cfg.get("fixed_lambda"),
        "seed": cfg.get("seed"), "status": run.status, "attribute": cfg.get("attribute") or "group",
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
        row[k] = _num(v.get("value"))
        row[f"{k}_lo"], row[f"{k}_hi"] = _num(v.get("lo")), _num(v.get("hi"))
    row["certified"] = cert.get("certified")
    row["cert_epsilon"] = cert.get("epsilon")
    row["cert_max_upper"] = _num(cert.get("max_upper"))
    for k in KINDS:
        c = byk.get(k, {})
        row[f"certified_{k}"] = c.get("certified")
        row[f"upper_{k}"] = _num(c.get("max_upper"))
    role = ev.get("role") or {}  # attribute role: the raw rates behind violation_dp / violation_eo, and the gaps
    for k in ROLE_TABLE_KEYS:
        row[f"role_{k}"] = _num(role.get(k))
    for k in ("dp", "eo"):  # the violation a reward ignoring the group would show on this split, and the p-value
        ch = (ev.get("chance") or {}).get(k, {})
        row[f"chance_{k}"] = _num(ch.get("chance_median"))
        row[f"chance_p_{k}"] = _num(ch.get("p_value"))
    return row


def _num(v: Any) -> float:
    return float(v) if v is not None else float("nan")


def _train_seconds(run: Any) -> float:
    st = run.raw_status()
    if st.get("started") and st.get("finished"):
        return round(float(st["finished"]) - float(st["started"]), 3)
    return float("nan")


# ---------------------------------------------------------------------------------------------------
# executors
# ---------------------------------------------------------------------------------------------------
def _run_local(jobs: list[dict[str, Any]], kw: dict[str, Any], workers: int,
               on_done: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    import multiprocessing as mp

    rows: list[dict[str, Any]] = []
    if workers <= 1:
        for j in jobs:
            rows.append(run_job(j, **kw))
            if on_done:
                on_done(rows[-1])
        return rows
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(run_job, j, **kw) for j in jobs]
        for f in as_completed(futs):
            rows.append(f.result())
            if on_done:
                on_done(rows[-1])
    return rows


def _run_ray(jobs: list[dict[str, Any]], kw: dict[str, Any], workers: int,
             on_done: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    """Each job a Ray task asking for :func:`faro_core.train.ray_launch.ray_resources` (one CPU; one GPU in full
    mode). A task whose worker dies leaves its run interrupted (resumable: run the sweep again) and the
    others go on; its row carries the error."""
    from faro_core.train.ray_launch import _import_ray, check_cluster, ray_resources

    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=workers if not os.environ.get("RAY_ADDRESS") else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        started = True
    try:
        total = ray.cluster_resources()
        refs = {}
        for j in jobs:
            res = ray_resources(j.get("mode") or "head")
            check_cluster(res, total, f"the Ray cluster at {os.environ.get('RAY_ADDRESS') or 'this machine'}")
            refs[ray.remote(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], max_retries=0)(run_job).remote(
                j, **kw)] = j
        pending = list(refs)
        rows = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                rows.append(ray.get(done[0]))
            except Exception as exc:  # the worker died: report the run, keep the others
                rows.append(_failed_row(refs[done[0]], kw["runs_dir"], exc))
            if on_done:
                on_done(rows[-1])
        return rows
    finally:
        if started:
            ray.shutdown()


def _failed_row(job: dict[str, Any], runs_dir: str, exc: BaseException) -> dict[str, Any]:
    """The sweep-table row of a job whose worker died: what the store says of its run, and the error."""
    rid = run_id_for(FaroConfig.from_dict(job))
    store = RunStore(runs_dir)
    row: dict[str, Any] = table_row(store.get(rid)) if store.has(rid) else {"run_id": rid, "status": "failed"}
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    row.update(skipped=False, job_seconds=float("nan"), error=f"{type(exc).__name__}: {first}")
    return row


EXECUTORS = {"local": _run_local, "ray": _run_ray}


def run_sweep(spec: SweepSpec, runs_dir: str | Path, workers: int = 2, executor: str = "local",
              on_done: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; writes the table and Pareto summary; returns ``{"table", "pareto", "dir", ...}``."""
    if executor not in EXECUTORS:
        raise FaroError(f"unknown executor {executor!r}; choose local or ray")
    if not RUN_ID_RE.match(str(spec.name)) or ".." in str(spec.name):  # it names a folder under the store
        raise FaroError(f"invalid sweep name {spec.name!r}: use letters, digits, '.', '_' and '-' only "
                        f"(no '/' or '..')")
    t0 = time.perf_counter()
    configs = grid(spec)
    jobs = [c.to_dict() for c in configs]
    kw = {"runs_dir": str(runs_dir), "n_boot": spec.n_boot, "delta": spec.delta,
          "certify_epsilon": spec.certify_epsilon}
    rows = EXECUTORS[executor](jobs, kw, max(1, int(workers)), on_done)
    order = {run_id_for(c): i for i, c in enumerate(configs)}
    table = pd.DataFrame(rows).sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)
    out_dir = Path(runs_dir) / SWEEPS_DIR / spec.name
    pareto = pareto_summary(table)
    write_sweep(table, pareto, out_dir)
    return {"name": spec.name, "dir": str(out_dir), "runs": len(table), "skipped": int(table["skipped"].sum()),
            "seconds": round(time.perf_counter() - t0, 3), "pareto": pareto, "table": table}


# ---------------------------------------------------------------------------------------------------
# Pareto front and hypervolume
# ---------------------------------------------------------------------------------------------------
def family(row: dict[str, Any] | pd.Series) -> str:
    """Method family of a table row: ``faro-dp``, ``bt``, ``fixed_lambda-eo``, ``expgrad-dp``, ..."""
    m, c = row["method"], row["constraint"]
    return f"{m}-{c}" if c and c != "none" else m


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% t-interval half-width over seeds per configuration (family, epsilon, fixed_lambda)."""
    from scipy import stats

    t = table.assign(family=table.apply(family, axis=1))
    keys = ["family", "method", "constraint", "epsilon", "fixed_lambda"]
    t["fixed_lambda"] = t["fixed_lambda"].where(t["method"] == "fixed_lambda", np.nan)
    num = [c for c in t.columns if c not in keys and pd.api.types.is_numeric_dtype(t[c])
           and not c.endswith(("_lo", "_hi")) and c not in ("seed",)]
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
    Faro's front (``faro-<kind>``) does not dominate."""
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
            fams[fam] = {
                "hypervolume": hypervolume(g[acc_col].to_numpy(), g[col].to_numpy()),
                "front": [{"epsilon": _num(g["epsilon"].iloc[i]), "fixed_lambda": _num(g["fixed_lambda"].iloc[i]),
                           "accuracy": float(g[acc_col].iloc[i]), "violation": float(g[col].iloc[i])}
                          for i in idx],
            }
        faro = fams.get(f"faro-{k}")
        if faro:
            fa = np.array([p["accuracy"] for p in faro["front"]])
            fv = np.array([p["violation"] for p in faro["front"]])
            undominated = []
            for fam, f in fams.items():
                if fam == f"faro-{k}":
                    continue
                for p in f["front"]:
                    if not np.any((fa >= p["accuracy"]) & (fv <= p["violation"])):
                        undominated.append({"family": fam, **p})
            out[k] = {"families": fams, "faro_dominates_all": not undominated, "not_dominated_by_faro": undominated}
        else:
            out[k] = {"families": fams}
    return out


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


def markdown_table(agg: pd.DataFrame) -> str:
    """Markdown table of seed-aggregated rows: mean ± 95% CI half-width."""
    cols = ["gold_accuracy", "accuracy", "violation_dp", "violation_eo", "violation_cf", "ece"]
    head = "| model | eps | seeds | " + " | ".join(cols) + " | certified (dp/eo/cf) |"
    lines = [head, "|" + "---|" * (len(cols) + 4)]
    for _, r in agg.iterrows():
        eps = "" if not math.isfinite(r["epsilon"]) else f"{r['epsilon']:g}"
        if r["method"] == "fixed_lambda":
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
