"""The BBQ study: Faro-DP/EO/CF vs BT and the baselines on BBQ with 30% stereotype skew (head mode).

Trains every model through one resumable sweep (:mod:`faro_core.studies.sweep`), evaluates and certifies each on its
held-out split, audits it on CrowS-Pairs and HH-RLHF, and writes

- ``bench/results/study_bbq.md``: setup, wall time, the table (mean ± 95% CI over seeds), the Faro-vs-BT
  certificate at eps = 0.05, Pareto hypervolumes and the baseline points Faro's front does not dominate;
- ``bench/results/study_bbq_pareto.{html,png}``: gold accuracy vs DP violation (PNG when kaleido can render).

Usage: ``python bench/study_bbq.py [--quick] [--seeds 5] [--kinds dp,eo,cf] [--workers 2] [--runs-dir runs/study_bbq]``.
``--quick`` (CI): one seed, the Religion category only, DP only, BT + posthoc + expgrad, 10 epochs.
Rerunning resumes: finished runs are not retrained.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import Benchmark  # noqa: E402

from faro_core.fairness.attributes import is_per_item  # noqa: E402
from faro_core.paths import SHARED_DATA  # noqa: E402
from faro_core.train.method_spec import PRIMARY, REFERENCE, by_lambda  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def audit_chunk(run_ids: list[str], runs_dir: str, crows: str | None, hh: str | None, hh_limit: int) -> list[dict]:
    """Audit several runs in one process (the feature cache is loaded once per process)."""
    import torch

    from faro_core.evaluate.audits import audit_run
    from faro_core.store.runs import RunStore

    torch.set_num_threads(1)
    store = RunStore(runs_dir)
    out = []
    for rid in run_ids:
        res = audit_run(store.get(rid), crows=crows, hh=hh, hh_limit=hh_limit)
        row = {"run_id": rid}
        if "crows" in res:
            row["crows_rate"] = res["crows"]["stereotype_rate"]["value"]
        if "hh" in res:
            row["hh_accuracy"] = res["hh"]["accuracy"]["value"]
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    from faro_core.studies.grid import SweepSpec, parse_baselines
    from faro_core.studies.sweep import run_sweep
    from faro_core.train import FaroConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI size: 1 seed, Religion only, few models")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--baselines", default="bt,reweight,posthoc,fixed_lambda,expgrad,group_dro,fair_reg")
    ap.add_argument("--epsilons", default="0.1,0.05,0.02")
    ap.add_argument("--kinds", default="dp,eo,cf", help="Faro constraints to sweep (default dp,eo,cf)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "study_bbq"))
    ap.add_argument("--epochs", type=int, default=None, help="head epochs (default: the trainer's, 40)")
    ap.add_argument("--hh-limit", type=int, default=300, help="HH-RLHF pairs audited (seeded subset)")
    ap.add_argument("--no-audit", action="store_true")
    ap.add_argument("--redraw-data", action="store_true",
                    help="each seed also redraws the data seed (split and skewed items), not only training")
    ap.add_argument("--attribute", choices=["group", "role"], default=None,
                    help="DP/EO's sensitive attribute (default: role, the default on BBQ-format data)")
    ap.add_argument("--dual-signal", choices=["auto", "strict", "proxy"], default="auto",
                    help="what Faro's dual step ascends on (default auto: smooth for DP/EO)")
    ap.add_argument("--out", default=None, help="report path stem (default bench/results/study_bbq[_quick])")
    ap.add_argument("--rerender-chance", default=None, metavar="STEM",
                    help="rewrite only the chance section of STEM.md from STEM.csv (no training)")
    args = ap.parse_args(argv)
    args.out = args.out or str(RESULTS / ("study_bbq_quick" if args.quick else "study_bbq"))
    if args.rerender_chance:
        return rerender_chance(Path(args.rerender_chance))

    bbq = SHARED_DATA / "bbq"
    if not bbq.exists():
        print(f"study_bbq: {bbq} is absent; nothing to do", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if args.quick:
        # one category: cells are small, so estimate cells from 10 members (default 20)
        base = FaroConfig(data=str(bbq / "Religion.jsonl"), format="bbq", skew=0.3, mode="head",
                          epochs=args.epochs or 10, min_count=10, attribute=args.attribute)
        spec = SweepSpec(base=base, kinds=["dp"], epsilons=[0.05], seeds=[0], baselines=["bt", "posthoc", "expgrad"],
                         name="study_bbq_quick", n_boot=50)
    else:
        base = FaroConfig(data=str(bbq), format="bbq", skew=0.3, mode="head", epochs=args.epochs,
                          attribute=args.attribute, dual_signal=args.dual_signal)
        spec = SweepSpec(base=base, kinds=[k.strip() for k in args.kinds.split(",")], epsilons=[float(e) for e in args.epsilons.split(",")],
                         seeds=list(range(args.seeds)), baselines=parse_baselines(args.baselines),
                         name="study_bbq", n_boot=100, redraw_data=args.redraw_data)
    done = [0]

    def progress(row: dict) -> None:
        done[0] += 1
        print(f"[{time.perf_counter() - t0:7.1f}s] {done[0]:3d} {row['run_id']}: gold {row['gold_accuracy']:.3f} "
              f"dp {row['violation_dp']:.3f}{' (done before)' if row['skipped'] else ''}", file=sys.stderr, flush=True)

    res = run_sweep(spec, args.runs_dir, workers=args.workers, on_done=progress)
    table: pd.DataFrame = res["table"]
    t_train = time.perf_counter() - t0

    if not args.no_audit:
        crows = SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv"
        hh = SHARED_DATA / "hh_rlhf"
        ids = list(table["run_id"])
        chunks = [ids[i::args.workers] for i in range(args.workers) if ids[i::args.workers]]
        with ProcessPoolExecutor(max_workers=args.workers) as ex:
            futs = [ex.submit(audit_chunk, c, args.runs_dir, str(crows) if crows.exists() else None,
                              str(hh) if hh.exists() else None, args.hh_limit) for c in chunks]
            audits = pd.DataFrame([r for f in futs for r in f.result()])
        table = table.merge(audits, on="run_id", how="left")
    wall = time.perf_counter() - t0
    write_report(table, spec, args, wall, t_train, Path(args.out))
    print(f"study_bbq: {len(table)} runs in {wall:.0f}s (training+eval {t_train:.0f}s); report {args.out}.md",
          file=sys.stderr)
    return 0


def write_report(table: pd.DataFrame, spec, args, wall: float, t_train: float, out: Path) -> None:
    from faro_core.io import write_json
    from faro_core.results.pareto import pareto_summary, sweep_points
    from faro_core.results.plots import pareto_figure, save_figure
    from faro_core.results.table import aggregate, markdown_table

    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    agg = aggregate(table)
    pareto = pareto_summary(table)
    write_json(out.parent / f"{out.name}_pareto.json", pareto)
    figs = save_figure(pareto_figure(sweep_points(table, "dp"), "dp", accuracy_title="gold accuracy (test)",
                                     title="BBQ (skew 0.3): gold accuracy vs DP violation"),
                       out.parent / f"{out.name}_pareto")
    lines = [f"# BBQ study{' (quick)' if args.quick else ''}", "",
             f"Data: `{spec.base.data}` (skew ρ = {spec.base.skew}, "
             f"{'data seed = seed: each seed redraws the split and the skewed items' if spec.redraw_data else f'data seed {spec.base.data_seed}'}), "
             f"attribute {spec.base.attribute or 'the data default'}, head mode, "
             f"{len(spec.seeds)} seed(s), constraint kinds {spec.kinds}, ε ∈ {spec.epsilons}, "
             f"baselines {spec.baselines}. Held-out test split; gold = unskewed BBQ label.",
             f"Wall time: **{wall:.0f} s** ({t_train:.0f} s training + evaluation + certificates for "
             f"{len(table)} runs, {args.workers} workers; the rest audits). Produced by `bench/study_bbq.py"
             f"{' --quick' if args.quick else ''}`.", "",
             "Cells: mean ± 95% t-interval half-width over seeds. Violations: max one-sided violation per kind "
             "on the test split. Certified: share of seeds whose test-split certificate holds at ε = 0.05 "
             "(δ = 0.05, union bound over that kind's one-sided constraints).", "",
             markdown_table(agg), ""]
    if "crows_rate" in agg or "hh_accuracy" in agg:
        lines += ["## Audits", "", "| model | eps | CrowS stereotype rate (0.5 = unbiased) | HH-RLHF accuracy |",
                  "|---|---|---|---|"]
        for _, r in agg.iterrows():
            eps = f"λ={r['fixed_lambda']:g}" if by_lambda(r["method"]) else (
                "" if not math.isfinite(r["epsilon"]) else f"{r['epsilon']:g}")
            lines.append(f"| {r['family']} | {eps} | {_pm(r, 'crows_rate')} | {_pm(r, 'hh_accuracy')} |")
        lines.append("")
    lines += [*chance_section(agg, table), ""]
    lines += certificate_section(table), ""
    lines += ["## Pareto fronts (gold accuracy vs violation, seed means)", "",
              f"Hypervolume reference point: gold accuracy {pareto['reference']['gold_accuracy']}, violation "
              f"{pareto['reference']['violation']} (area dominated inside that box; larger is better).", ""]
    for k in ("dp", "eo", "cf"):
        if k not in pareto:
            continue
        p = pareto[k]
        hv = ", ".join(f"{f} {v['hypervolume']:.4f}" for f, v in p["families"].items())
        lines.append(f"- **{k.upper()}**: hypervolume {hv}.")
        if "faro_dominates_all" in p:
            if p["faro_dominates_all"]:
                lines.append(f"  Faro-{k.upper()}'s front dominates every baseline point.")
            else:
                nd = "; ".join(f"{u['family']} (acc {u['accuracy']:.3f}, viol {u['violation']:.3f})"
                               for u in p["not_dominated_by_faro"])
                lines.append(f"  Not dominated by Faro-{k.upper()}'s front: {nd}.")
            if p.get("oracle_not_dominated_by_faro"):
                nd = "; ".join(f"{u['family']} (acc {u['accuracy']:.3f}, viol {u['violation']:.3f})"
                               for u in p["oracle_not_dominated_by_faro"])
                lines.append(f"  Oracle reference points (read the group or role at scoring time; not a baseline "
                             f"to dominate) off Faro-{k.upper()}'s front: {nd}.")
    lines += ["", "Figure: " + ", ".join(f"`{f.name}`" for f in figs), ""]
    out.with_suffix(".md").write_text("\n".join(lines))


def chance_section(agg: pd.DataFrame, table: pd.DataFrame | None = None) -> list[str]:
    """Each model's test-split DP/EO violation next to the chance level of its own selections, and how many
    seeds' permutation tests reject chance at 0.05 (p-values are counted per seed, never averaged)."""
    if "chance_dp" not in agg:
        return []
    role = table is not None and "attribute" in table and bool(table["attribute"].map(is_per_item).any())
    what = ("DP: the biased and counter answers swapped within each item (per template where the run splits by "
            "template); EO: correct-answer roles permuted within category x polarity (template x polarity on "
            "template splits); 2,000 permutations per run" if role else
            "group labels permuted within each anchor, 200 permutations per run")
    rows = ["## Violations against their chance level (test split)", "",
            f"Chance level: the median violation of the same selections under the null ({what}; "
            "`faro_core.fairness.chance`), seed mean. 'p < 0.05': seeds whose own permutation test rejects "
            "chance at 0.05, out of the seeds (one test per seed; p-values are not averaged). A violation near "
            "its chance level is what a reward that ignores the group would show on cells of this size.", "",
            "| model | eps | DP | DP chance | DP p < 0.05 | EO | EO chance | EO p < 0.05 |",
            "|---|---|---|---|---|---|---|---|"]
    for _, r in agg.iterrows():
        eps = f"λ={r['fixed_lambda']:g}" if by_lambda(r["method"]) else (
            "" if not math.isfinite(r["epsilon"]) else f"{r['epsilon']:g}")
        rej = {k: "–" for k in ("dp", "eo")}
        if table is not None:
            from faro_core.results.table import family_key

            fam = table.assign(_f=table.apply(family_key, axis=1))
            same = fam[(fam["_f"] == r["family"]) & np.isclose(fam["epsilon"].astype(float), float(r["epsilon"]),
                                                                equal_nan=True)]
            for k in ("dp", "eo"):
                p = same[f"chance_p_{k}"].dropna()
                rej[k] = f"{int((p < 0.05).sum())}/{len(p)}" if len(p) else "–"
        rows.append(f"| {r['family']} | {eps} | {_pm(r, 'violation_dp')} | {r['chance_dp']:.3f} | "
                    f"{rej['dp']} | {_pm(r, 'violation_eo')} | {r['chance_eo']:.3f} | {rej['eo']} |")
    return rows


def rerender_chance(stem: Path) -> int:
    """Replace the chance section of ``stem.md`` by :func:`chance_section` of ``stem.csv`` (the runs' rows)."""
    from faro_core.results.table import aggregate

    md, csv = stem.with_suffix(".md"), stem.with_suffix(".csv")
    table = pd.read_csv(csv)
    text = md.read_text()
    start = text.find("## Violations against their chance level")
    if start < 0:
        print(f"study_bbq: {md} has no chance section", file=sys.stderr)
        return 1
    end = text.find("\n## ", start + 3)
    new = "\n".join(chance_section(aggregate(table), table)) + "\n\n"
    md.write_text(text[:start] + new + (text[end + 1:] if end >= 0 else ""))
    print(f"study_bbq: rewrote the chance section of {md}", file=sys.stderr)
    return 0


def certificate_section(table: pd.DataFrame) -> str:
    """Faro-DP at eps = 0.05 vs plain BT, DP certificate at eps = 0.05 on each seed's test split."""
    f = table[(table["method"] == PRIMARY) & (table["constraint"] == "dp") & (np.isclose(table["epsilon"], 0.05))]
    b = table[table["method"] == REFERENCE]
    rows = ["## Certificate at ε = 0.05 (DP): Faro-DP vs BT", "",
            "| model | seeds certified | max empirical DP violation | max upper bound (95%) |", "|---|---|---|---|"]
    for name, t in (("Faro-DP ε=0.05", f), ("BT", b)):
        if t.empty:
            continue
        cert = [bool(x) for x in t["certified_dp"] if x == x and x is not None]
        rows.append(f"| {name} | {sum(cert)}/{len(t)} | {t['violation_dp'].mean():.3f} "
                    f"(max {t['violation_dp'].max():.3f}) | {t['upper_dp'].mean():.3f} "
                    f"(min {t['upper_dp'].min():.3f}) |")
    return "\n".join(rows)


def _pm(r: pd.Series, c: str) -> str:
    v, ci = r.get(c), r.get(f"{c}_ci")
    if v is None or v != v:
        return "–"
    return f"{v:.3f}" if ci is None or ci != ci else f"{v:.3f} ± {ci:.3f}"


BENCH = Benchmark("study_bbq", "study", "Faro against BT and every baseline on BBQ (the study)", run=main,
                  json="", runs_dir=True,
                  tables=("study_bbq.md", "study_bbq_quick.md", "study_bbq_dp.md", "study_bbq_role.md",
                          "study_bbq_role_eo_cf.md"))

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
