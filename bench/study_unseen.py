"""The unseen-templates study: does the skew create a bias, does Faro remove it, is it the penalty, and is it
certified -- all on BBQ templates the model never saw.

Setup (stated before the study runs): the 5 published BBQ categories (``../shared/data/bbq``), skew rho = 0.3,
head mode, the role attribute, template-held-out splits (20% of each category's 25 templates in test, 20% in
validation), delta = 0.05. Arms, each over data seeds 0..9 (split and skewed items redrawn) at training
seed 0:

- ``BT``: unconstrained Bradley-Terry;
- ``Faro-DP``: DP on the stereotype role at eps = 0.05;
- ``Selection only``: Faro-DP's iterate selection with the multipliers held at 0 (BT's path);
- ``BT rho=0``: BT without skew, over data seeds 0..4;
- variance arm: BT at training seeds 1, 2 on data seeds 0..2 (with seed 0 a 3 x 3 design).

The tests, one-sided and fixed in advance: (1) BT's seed-mean P(r_biased > r_counter) > 0.5 at rho = 0.3;
(2) the seed-mean paired Delta P = P_BT - P_Faro > 0 (95% seed-level interval above 0); (3) Delta P of the
selection-only arm minus Faro-DP > 0 (p < 0.05). Intervals of a single run's Delta P are cluster-robust over
templates (:mod:`faro_core.evaluate.paired`); the pooled Delta P stacks every seed's items with (seed,
template) clusters. Certificates: the cluster-robust role-DP bound (:func:`faro_core.evaluate.certify.certify_run`,
``unit="cluster"``) at eps = 0.1 and 0.05 per seed.

Usage::

    python bench/study_unseen.py train --data-seeds 0,1      # train (resumable) a chunk of the grid
    python bench/study_unseen.py report                       # tables from the store
    python bench/study_unseen.py all                          # both

Writes ``bench/results/study_unseen.{md,json}``. ``--runs-dir`` (default ``runs/study_unseen``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import Benchmark  # noqa: E402

from faro_core.paths import SHARED_DATA  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DATA_SEEDS = list(range(10))
RHO0_SEEDS = list(range(5))
VAR_DATA_SEEDS = [0, 1, 2]
VAR_TRAIN_SEEDS = [1, 2]
EPSILON = 0.05
SKEW = 0.3
TIMES = "_study_unseen_times.json"


def base_config(skew: float, categories: str | None = None) -> Any:
    from faro_core.train.config import FaroConfig

    data = SHARED_DATA / "bbq"
    return FaroConfig(data=str(data if categories is None else data / categories), format="bbq", skew=skew,
                      mode="head", attribute="role", split_by="template")


def specs(data_seeds: list[int]) -> list[Any]:
    """The sweeps of the chunk ``data_seeds`` (each resumable: done runs are skipped)."""
    from faro_core.studies.grid import SweepSpec

    out = [SweepSpec(base=base_config(SKEW), kinds=["dp"], epsilons=[EPSILON], seeds=[0], data_seeds=data_seeds,
                     baselines=["bt", "select_only"], name="study_unseen", n_boot=100)]
    rho0 = [d for d in data_seeds if d in RHO0_SEEDS]
    if rho0:
        out.append(SweepSpec(base=base_config(0.0), kinds=[], epsilons=[EPSILON], seeds=[0], data_seeds=rho0,
                             baselines=["bt"], name="study_unseen_rho0", n_boot=100))
    var = [d for d in data_seeds if d in VAR_DATA_SEEDS]
    if var:
        out.append(SweepSpec(base=base_config(SKEW), kinds=[], epsilons=[EPSILON], seeds=VAR_TRAIN_SEEDS,
                             data_seeds=var, baselines=["bt"], name="study_unseen_var", n_boot=100))
    return out


def train(args: argparse.Namespace) -> None:
    from faro_core.studies.sweep import run_sweep

    seeds = [int(s) for s in args.data_seeds.split(",")] if args.data_seeds else DATA_SEEDS
    runs = Path(args.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    for spec in specs(seeds):
        t0 = time.perf_counter()
        res = run_sweep(spec, runs, workers=args.workers, engine=args.engine)
        wall = time.perf_counter() - t0
        log = json.loads((runs / TIMES).read_text()) if (runs / TIMES).exists() else []
        log.append({"sweep": spec.name, "data_seeds": spec.data_seeds, "runs": res["runs"],
                    "trained": res["runs"] - res["skipped"], "seconds": round(wall, 1), "engine": args.engine,
                    "workers": args.workers})
        (runs / TIMES).write_text(json.dumps(log, indent=1))
        print(f"study_unseen: {spec.name} data seeds {spec.data_seeds}: {res['runs']} runs "
              f"({res['skipped']} done before) in {wall:.0f}s", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
def arm_of(cfg: dict[str, Any]) -> str:
    from faro_core.train.methods import REFERENCE, SPECS, identity, is_primary, is_reference

    if is_reference(cfg):
        return SPECS[REFERENCE].label + (" rho=0" if float(cfg["skew"]) == 0.0 else "")
    if is_primary(cfg):
        return f"Faro-DP eps={cfg['epsilon']:g}"
    m = identity(cfg)
    return {"select_only": SPECS["select_only"].label}.get(m, m)


def collect(runs_dir: Path) -> tuple[pd.DataFrame, dict[tuple[str, int, int], pd.DataFrame]]:
    """One row per finished study run, and each run's role items (ambiguous and disambiguated)."""
    from faro_core.evaluate.certify import certify_run
    from faro_core.evaluate.metrics import load_split
    from faro_core.fairness.role_stats import role_items, role_violations
    from faro_core.store.runs import RunStore

    store = RunStore(runs_dir)
    rows, items = [], {}
    for run in store.list():
        cfg = run.config or {}
        if run.status != "done" or cfg.get("sweep", "") not in ("study_unseen", "study_unseen_rho0",
                                                                 "study_unseen_var"):
            continue
        arm = arm_of(cfg)
        it = role_items(load_split(run, "test"))
        tr = load_split(run, "train")
        leak = len(set(it["cluster"]) & set(tr["cluster"].astype(str)))
        v = role_violations(it)
        metrics = run.read("metrics.json") or {}
        test = metrics.get("test", {})
        row = {"arm": arm, "data_seed": int(cfg["data_seed"]), "seed": int(cfg["seed"]), "run_id": run.run_id,
               "P": v["p_biased_over_counter"], "v_dp": v["dp"], "gold": test.get("gold_accuracy"),
               "n_amb": v["n_dp"], "test_templates": int(it["cluster"].nunique()), "leaked_templates": leak,
               "selected_by": metrics.get("selected_by"), "selected_step": metrics.get("selected_step")}
        lam = [h.get("lambda_max", 0.0) for h in run.history()]
        row["lambda_max"] = max(lam) if lam else None
        row["binding_steps"] = int(sum(v > 0 for v in lam))
        if arm.startswith("Faro") or arm == "Selection only" or arm == "BT":
            for eps in (0.1, 0.05):
                c = certify_run(run, delta=0.05, epsilon=eps, kinds=["dp"], write=False, sizes=False)
                r = next(b for b in c["bounds"] if b["kind"] == "dp")
                row.update({f"cert{eps:g}": bool(c["certified"]), f"upper{eps:g}": r["upper"],
                            "clusters": r["clusters"], "n_eff": r["n_eff"], "deff": r["design_effect"],
                            f"why_not{eps:g}": r.get("why_not")})
        if row["seed"] == 0 and arm in ("BT", "BT rho=0") or arm.startswith("Faro"):
            late = late_items(run)
            if late is not None:
                lv = role_violations(late)
                row.update(P_late=lv["p_biased_over_counter"], v_dp_late=lv["dp"], late_step=late.attrs["step"],
                           gold_late=late.attrs["gold"])
                items[(arm + " (last iterate)", row["data_seed"], row["seed"])] = late
        rows.append(row)
        items[(arm, row["data_seed"], row["seed"])] = it
    return pd.DataFrame(rows).sort_values(["arm", "data_seed", "seed"]).reset_index(drop=True), items


_DATA_MEMO: dict[tuple, pd.DataFrame] = {}


def late_items(run: Any) -> pd.DataFrame | None:
    """Role items of the run's test split scored by its *last checkpoint* (the weights ``ckpt_every`` steps or
    fewer before the end: the iterate training converged to), instead of the selected iterate. None when the
    run has no checkpoint."""
    from safetensors.torch import load_file

    from faro_core.fairness.role_stats import role_items
    from faro_core.models.reward import load_scorer
    from faro_core.train.config import FaroConfig
    from faro_core.train.inputs import load_training_data

    ck = run.file("checkpoint")
    if not (ck / "state.json").exists():
        return None
    state = json.loads((ck / "state.json").read_text())
    tensors = load_file(str(ck / state["tensors"]))
    scorer = load_scorer(run, device="cpu")
    scorer.head.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    cfg = FaroConfig.from_dict(run.config)
    key = (cfg.data, cfg.skew, cfg.data_seed, cfg.split_by, cfg.val_frac, cfg.test_frac)
    if key not in _DATA_MEMO:
        _DATA_MEMO[key] = load_training_data(cfg)[1]
    df = _DATA_MEMO[key]
    test = df[df["split"] == "test"].reset_index(drop=True)
    test = test.assign(r_chosen=scorer.score(test["prompt"], test["chosen"]),
                       r_rejected=scorer.score(test["prompt"], test["rejected"]))
    it = role_items(test.drop(columns=["prompt", "chosen", "rejected", "cf_prompt", "cf_chosen", "cf_rejected"]))
    it.attrs["step"] = int(state["step"])
    gold = pd.to_numeric(test["gold"], errors="coerce").to_numpy(float)
    right = (test["r_chosen"] > test["r_rejected"]).to_numpy(float)
    keep = ~np.isnan(gold)
    it.attrs["gold"] = float(np.mean(np.where(gold[keep] == 1.0, right[keep], 1.0 - right[keep])))
    return it


def paired_by_seed(items: dict, a: str, b: str) -> pd.DataFrame:
    from faro_core.evaluate.paired import paired_role_difference

    out = []
    for (arm, ds, s), it in sorted(items.items()):
        if arm != a or s != 0 or (b, ds, 0) not in items:
            continue
        r = paired_role_difference(it, items[(b, ds, 0)])
        out.append({"data_seed": ds, "dP": r["value"], "lo": r["lo"], "hi": r["hi"], "clusters": r["clusters"],
                    "n": r["n"], "deff": r["design_effect"]})
    return pd.DataFrame(out)


def pooled(items: dict, a: str, b: str) -> dict[str, Any]:
    """Delta P over every seed's items together, clusters = (data seed, template)."""
    from faro_core.evaluate.paired import cluster_mean_interval

    d, cl = [], []
    for (arm, ds, s), it in sorted(items.items()):
        if arm != a or s != 0 or (b, ds, 0) not in items:
            continue
        x = it[it["x_dp"].notna()].set_index("item_id")
        y = items[(b, ds, 0)]
        y = y[y["x_dp"].notna()].set_index("item_id")
        d.append((x["x_dp"] - y["x_dp"].reindex(x.index)).to_numpy())
        cl.append((f"{ds}/" + x["cluster"].astype(str)).to_numpy())
    if not d:
        return {}
    return cluster_mean_interval(np.concatenate(d), np.concatenate(cl))


def variance_components(t: pd.DataFrame) -> dict[str, Any] | None:
    """Two-way random-effects ANOVA without replication of BT's P on the data x training seed square."""
    sq = t[(t["arm"] == "BT") & t["data_seed"].isin(VAR_DATA_SEEDS) & t["seed"].isin([0, *VAR_TRAIN_SEEDS])]
    m = sq.pivot_table(index="data_seed", columns="seed", values="P")
    if m.shape != (len(VAR_DATA_SEEDS), 1 + len(VAR_TRAIN_SEEDS)) or m.isna().any().any():
        return None
    y = m.to_numpy()
    r, c = y.shape
    g = y.mean()
    ms_r = c * np.sum((y.mean(1) - g) ** 2) / (r - 1)
    ms_c = r * np.sum((y.mean(0) - g) ** 2) / (c - 1)
    ms_e = np.sum((y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + g) ** 2) / ((r - 1) * (c - 1))
    return {"data_draw": max(0.0, (ms_r - ms_e) / c), "training_seed": max(0.0, (ms_c - ms_e) / r),
            "residual": float(ms_e), "table": m.round(4).to_dict()}


def report(args: argparse.Namespace) -> dict[str, Any]:
    from faro_core.evaluate.paired import seed_level

    runs = Path(args.runs_dir)
    t, items = collect(runs)
    if t.empty:
        raise SystemExit(f"study_unseen: no finished study runs under {runs}")
    faro = f"Faro-DP eps={EPSILON:g}"
    main = t[t["seed"] == 0]
    res: dict[str, Any] = {"setup": {"categories": "5 published BBQ categories", "skew": SKEW, "mode": "head",
                                     "attribute": "role", "split_by": "template", "val_frac": 0.2,
                                     "test_frac": 0.2, "delta": 0.05, "epsilon": EPSILON}}
    res["leaked_templates_max"] = int(t["leaked_templates"].max())
    arms = {}
    for arm, g in main.groupby("arm"):
        arms[arm] = {"seeds": int(len(g)), "P": seed_level(list(g["P"] - 0.5), "greater"),
                     "P_per_seed": [round(float(x), 4) for x in g["P"]],
                     "v_dp": seed_level(list(g["v_dp"]), "two-sided"),
                     "gold": seed_level(list(g["gold"]), "two-sided"),
                     "test_templates": int(g["test_templates"].min()), "n_amb_mean": float(g["n_amb"].mean())}
        for eps in (0.1, 0.05):
            if f"cert{eps:g}" in g:
                arms[arm][f"certified_{eps:g}"] = int(g[f"cert{eps:g}"].fillna(False).sum())
    res["arms"] = arms
    late = {}
    for arm, g in main.groupby("arm"):
        if "P_late" in g and g["P_late"].notna().any():
            gl = g[g["P_late"].notna()]
            late[arm] = {"seeds": int(len(gl)), "P": seed_level(list(gl["P_late"] - 0.5), "greater"),
                         "v_dp": seed_level(list(gl["v_dp_late"]), "two-sided"),
                         "gold": seed_level(list(gl["gold_late"]), "two-sided"),
                         "step": int(gl["late_step"].min()), "P_per_seed": [round(float(x), 4) for x in gl["P_late"]]}
    res["last_iterate"] = late
    pairs = {}
    for a, b in (("BT", faro), ("Selection only", faro), ("BT", "Selection only"),
                 ("BT (last iterate)", f"{faro} (last iterate)"), ("BT (last iterate)", "BT rho=0 (last iterate)")):
        ps = paired_by_seed(items, a, b)
        if ps.empty:
            continue
        pairs[f"{a} - {b}"] = {"per_seed": ps.round(4).to_dict("records"),
                               "seed_level": seed_level(list(ps["dP"]), "greater"),
                               "pooled": pooled(items, a, b),
                               "seeds_interval_above_0": int((ps["lo"] > 0).sum())}
    res["paired"] = pairs
    res["variance"] = variance_components(t)
    times = json.loads((runs / TIMES).read_text()) if (runs / TIMES).exists() else []
    res["wall_seconds"] = round(sum(x["seconds"] for x in times), 1)
    res["trained_runs"] = int(sum(x["trained"] for x in times))
    res["engine"] = sorted({x["engine"] for x in times})
    res["runs"] = t.round(4).to_dict("records")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "study_unseen.json").write_text(json.dumps(res, indent=1, default=str))
    (RESULTS / "study_unseen.md").write_text(markdown(res, t))
    print((RESULTS / "study_unseen.md").read_text())
    return res


def _ci(d: dict[str, Any], digits: int = 3, shift: float = 0.0) -> str:
    if d.get("mean") is None or (isinstance(d["mean"], float) and math.isnan(d["mean"])):
        return "–"
    m, lo, hi = d["mean"] + shift, d["lo"] + shift, d["hi"] + shift
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(res: dict[str, Any], t: pd.DataFrame) -> str:
    faro = f"Faro-DP eps={EPSILON:g}"
    s = res["setup"]
    lines = ["# Unseen-templates study (BBQ, role attribute, template-held-out splits)", "",
             f"Data: the 5 published BBQ categories, skew ρ = {s['skew']}, head mode, attribute role, split by "
             f"template ({s['test_frac']:.0%} of each category's templates in test, {s['val_frac']:.0%} in "
             f"validation: 25 test templates), δ = {s['delta']}. Every figure is on **templates the model never "
             f"saw**; leaked test templates (in train too), largest over runs: **{res['leaked_templates_max']}**.",
             f"Cost: {res['trained_runs']} runs trained in **{res['wall_seconds']:.0f} s** of wall time "
             f"(engine {', '.join(res['engine'])}, 2 workers on 2 cores), plus evaluation. Produced by "
             f"`python bench/study_unseen.py all`.", "",
             "## Per arm (training seed 0; seed-level mean [95% t interval] over data draws)", "",
             "P = P(r_biased > r_counter) on ambiguous test items (0.5: no preference); p: one-sided t test of "
             "P > 0.5 over seeds.", "",
             "| arm | data seeds | P | p (P > ½) | v_DP | gold accuracy | certified at 0.1 | certified at 0.05 |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, a in res["arms"].items():
        lines.append(f"| {arm} | {a['seeds']} | {_ci(a['P'], shift=0.5)} | {a['P']['p']:.3g} | "
                     f"{_ci(a['v_dp'])} | {_ci(a['gold'])} | {a.get('certified_0.1', '–')}/{a['seeds']} | "
                     f"{a.get('certified_0.05', '–')}/{a['seeds']} |")
    lines += ["", "Per-seed P: " + "; ".join(f"{arm}: {', '.join(f'{x:.3f}' for x in a['P_per_seed'])}"
                                               for arm, a in res["arms"].items()), ""]
    if res.get("last_iterate"):
        lines += ["## The same runs at their last iterate (last checkpoint, not the selected one)", "",
                  "Each run's test split scored by its last checkpoint (step "
                  f"{min(a['step'] for a in res['last_iterate'].values())} or later of 5,050): what training "
                  "converges to, before validation selection picks an iterate.", "",
                  "| arm | data seeds | P | p (P > ½) | v_DP | gold accuracy | P per seed |",
                  "|---|---|---|---|---|---|---|"]
        for arm, a in res["last_iterate"].items():
            lines.append(f"| {arm} | {a['seeds']} | {_ci(a['P'], shift=0.5)} | {a['P']['p']:.3g} | {_ci(a['v_dp'])} | "
                         f"{_ci(a['gold'])} | {', '.join(f'{x:.3f}' for x in a['P_per_seed'])} |")
        lines.append("")
    lines += ["## The paired claim: ΔP on the same held-out items", "",
              "Per seed: ΔP with its cluster-robust 95% interval over test templates. Seed level: mean of the "
              "per-seed ΔP [95% t interval], one-sided t test of ΔP > 0. Pooled: every seed's items together, "
              "clusters = (data seed, template).", "",
              "| difference | seed-level mean ΔP | p (ΔP > 0) | seeds whose interval is above 0 | pooled ΔP "
              "[95% CR interval] | pooled clusters |", "|---|---|---|---|---|---|"]
    for name, p in res["paired"].items():
        po = p["pooled"]
        lines.append(f"| {name} | {_ci(p['seed_level'])} | {p['seed_level']['p']:.3g} | "
                     f"{p['seeds_interval_above_0']}/{len(p['per_seed'])} | {po['value']:.3f} [{po['lo']:.3f}, "
                     f"{po['hi']:.3f}] | {po['clusters']} |")
    lines.append("")
    if f"BT - {faro}" in res["paired"]:
        lines += [f"Per seed, BT − {faro}:", "", "| data seed | ΔP | 95% CR interval | templates | items | "
                  "design effect of the differences |", "|---|---|---|---|---|---|"]
        for r in res["paired"][f"BT - {faro}"]["per_seed"]:
            lines.append(f"| {r['data_seed']} | {r['dP']:.3f} | [{r['lo']:.3f}, {r['hi']:.3f}] | {r['clusters']} | "
                         f"{r['n']} | {r['deff']:.2f} |")
        lines.append("")
    fr = t[(t["arm"] == faro) & (t["seed"] == 0)]
    if not fr.empty and "upper0.1" in fr:
        lines += [f"## Certificates of {faro} on unseen templates (cluster-robust role-DP bound, δ = 0.05)", "",
                  "Clopper–Pearson at the design-effect-corrected n_eff (template clusters); margin = ε − upper "
                  "bound (positive: certified).", "",
                  "| data seed | v_DP | upper bound | margin at 0.1 | margin at 0.05 | templates | n_eff | design "
                  "effect |", "|---|---|---|---|---|---|---|---|"]
        for _, r in fr.iterrows():
            lines.append(f"| {r['data_seed']} | {r['v_dp']:.3f} | {r['upper0.1']:.3f} | {0.1 - r['upper0.1']:+.3f} | "
                         f"{0.05 - r['upper0.05']:+.3f} | {r['clusters']} | {r['n_eff']:.0f} | {r['deff']:.2f} |")
        lines.append("")
    v = res.get("variance")
    if v:
        lines += ["## Variance components of BT's P (3 data draws × 3 training seeds)", "",
                  f"Data draw: {v['data_draw']:.2e}; training seed: {v['training_seed']:.2e}; residual "
                  f"{v['residual']:.2e} (two-way random-effects ANOVA without replication; variances of P).", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["train", "report", "all"])
    ap.add_argument("--data-seeds", default=None, help="comma-separated data seeds to train (default 0..9)")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "study_unseen"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--engine", default="batched", choices=["batched", "serial"])
    args = ap.parse_args(argv)
    if not (SHARED_DATA / "bbq").exists():
        print(f"study_unseen: {SHARED_DATA / 'bbq'} is absent; nothing to do", file=sys.stderr)
        return 2
    if args.what in ("train", "all"):
        train(args)
    if args.what in ("report", "all"):
        report(args)
    return 0


BENCH = Benchmark("study_unseen", "study", "the unseen-templates study (train and report)",
                  run=main, quick=(), json="", runs_dir=True, args=("all",))

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
