"""Trainer acceptance on BBQ: plain BT vs Faro-DP/EO/CF (head mode, skew 0.3), validation and test numbers.

    python bench/trainer_bbq.py [--epsilon 0.05] [--seed 0] [--strata question_polarity,context_condition]
                                [--attribute group|role] [--runs-dir runs/trainer_bbq] [--json]

Trains each model as a sweep does (:func:`faro_core.studies.sweep.train_or_resume`: a finished run with the
same id is kept, an interrupted one resumes from its checkpoint, any other is trained afresh), then prints a table (violations are
the largest one-sided violation over the cells with at least ``min_count`` members) and writes
``bench/results/trainer_bbq.md``. With ``--attribute role`` DP and EO are the stereotype-role violations
(:mod:`faro_core.fairness.role`: v_DP = |P(r_biased > r_counter) - 1/2| over ambiguous items, v_EO =
|acc_biased - acc_counter| / 2 over disambiguated ones), the table adds the raw rates and the role chance
level, and it is written to ``bench/results/trainer_bbq_role.md``. With ``--json`` the last stdout line is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import Benchmark  # noqa: E402

from faro_core.evaluate.metrics import frame_to_batch, load_split, run_index  # noqa: E402
from faro_core.fairness.attributes import attribute_strategy  # noqa: E402
from faro_core.fairness.chance import chance_violation  # noqa: E402
from faro_core.paths import SHARED_DATA  # noqa: E402
from faro_core.store.runs import Run, RunStore  # noqa: E402
from faro_core.studies.sweep import train_or_resume  # noqa: E402
from faro_core.train import FaroConfig  # noqa: E402
from faro_core.train.method_spec import PRIMARY, REFERENCE, display_label  # noqa: E402


def train_seconds(run: Run) -> float:
    """The seconds a finished run trained (from its status file)."""
    st = run.read("status.json", {})
    return st.get("finished", 0) - st.get("started", 0)


def family(cons: list[str], epsilon: float) -> str:
    """The table label of a run of the primary method under ``cons`` (none: BT), from the method registry."""
    return display_label({"method": PRIMARY, "constraints": cons, "epsilon": epsilon})

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA / "bbq"))
    ap.add_argument("--skew", type=float, default=0.3)
    ap.add_argument("--epsilon", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--strata", default=None, help="comma-separated (default: the data's)")
    ap.add_argument("--models", default="bt,dp,eo,cf")
    ap.add_argument("--attribute", choices=["group", "role"], default="group",
                    help="DP/EO's sensitive attribute (default group: the table of trainer_bbq.md)")
    ap.add_argument("--dual-lr", type=float, default=None, help="override the dual step size (default: the config's)")
    ap.add_argument("--dual-every", type=int, default=None, help="override the dual step period")
    ap.add_argument("--temperature", type=float, default=None, help="override the DP/EO proxy temperature")
    ap.add_argument("--dual-signal", choices=["auto", "strict", "proxy"], default=None,
                    help="override what the dual step ascends on")
    ap.add_argument("--lambda-max", type=float, default=None, help="override the multiplier cap")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "trainer_bbq"))
    ap.add_argument("--out", default=None, help="default bench/results/trainer_bbq.md (role: trainer_bbq_role.md)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is absent", file=sys.stderr)
        return 0
    if attribute_strategy(args.attribute).per_item:
        return role_table(args)
    args.out = args.out or str(ROOT / "bench" / "results" / "trainer_bbq.md")
    store = RunStore(args.runs_dir)
    strata = args.strata.split(",") if args.strata else None
    tag = "-".join(strata) if strata else "default"
    rows, chance_rows, out = [], [], {}
    for model in args.models.split(","):
        cons = [] if model == REFERENCE else [model]  # BT: the primary method with no constraint
        run_id = f"{model}-eps{args.epsilon:g}-skew{args.skew:g}-s{args.seed}-{tag}".replace(",", "+")
        t0 = time.perf_counter()
        cfg = FaroConfig(data=args.data, skew=args.skew, constraints=cons, epsilon=args.epsilon,
                         seed=args.seed, strata=strata, epochs=args.epochs, attribute="group")
        run, was_done = train_or_resume(cfg, store, run_id=run_id)
        seconds = train_seconds(run) if was_done else time.perf_counter() - t0
        m = run.metrics()
        v, t = m.get("violation", {}), m.get("test", {}).get("violation", {})
        tr = m.get("train", {}).get("violation", {})
        out[model] = {"run_id": run_id, "val": v, "test": t, "train": tr, "gold_accuracy": m.get("gold_accuracy"),
                      "accuracy": m.get("accuracy"), "feasible": m.get("feasible"), "seconds": seconds}
        chance = {}
        for split in ("val", "test"):
            batch, _ = frame_to_batch(load_split(run, split), run_index(run))
            chance[split] = chance_violation(batch, run_index(run), min_count=int(run.config.get("min_count", 30)),
                                             n_perm=200, seed=0)
        out[model]["chance"] = chance
        label = family(cons, args.epsilon)
        chance_rows.append(f"| {label} | " + " | ".join(
            f"{c[k]['observed']:.3f} ({c[k]['chance_median']:.3f}, {c[k]['chance_p90']:.3f}; p {c[k]['p_value']:.2f})"
            for sp in ("val", "test") for c in [chance[sp]] for k in ("dp", "eo")) + " |")
        fmt = lambda d, k: f"{d[k]:.3f}" if d.get(k) is not None else "–"  # noqa: E731
        rows.append(f"| {label} | {fmt(v, 'dp')} | {fmt(v, 'eo')} | "
                    f"{fmt(v, 'cf')} | {fmt(t, 'dp')} | {fmt(t, 'eo')} | {fmt(t, 'cf')} | "
                    f"{m.get('gold_accuracy', float('nan')):.3f} | {m.get('test', {}).get('gold_accuracy', float('nan')):.3f} | "
                    f"{'yes' if m.get('feasible') else 'no'} | {fmt(tr, 'dp')} / {fmt(tr, 'eo')} / {fmt(tr, 'cf')} | "
                    f"{seconds:.0f} |")
    md = ["# Trainer on BBQ: plain BT vs Faro", "",
          f"`python bench/trainer_bbq.py --epsilon {args.epsilon:g}` — {time.strftime('%Y-%m-%d %H:%M')}. BBQ "
          f"(5 categories), skew ρ = {args.skew:g}, head mode, seed {args.seed}, strata {strata or 'the data default'}. "
          "Violation = largest one-sided violation over cells with ≥ 30 members in that split.", "",
          "| model | val DP | val EO | val CF | test DP | test EO | test CF | val gold acc | test gold acc | "
          "feasible on val | train split DP / EO / CF | train s |", "|---|---|---|---|---|---|---|---|---|---|---|---|",
          *rows, "",
          "Held-out DP and EO violations against their chance level: observed (median and 90th percentile of the "
          "same selections with group labels permuted within each anchor, 200 permutations; p = share of "
          "permutations at least as large). `faro_core.fairness.chance`; the permutation treats responses as "
          "independent, so with template-clustered errors the true chance level is higher still.", "",
          "| model | val DP | val EO | test DP | test EO |", "|---|---|---|---|---|", *chance_rows, ""]
    Path(args.out).write_text("\n".join(md))
    print("\n".join(md))
    if args.json:
        print(json.dumps(out, default=float))
    return 0


def _tuning(args: argparse.Namespace) -> tuple[dict, str]:
    """Config overrides of the dual game from the command line, and their run-id tag."""
    over, tag = {}, ""
    if args.dual_lr is not None:
        over["dual_lr"], tag = args.dual_lr, tag + f"-dlr{args.dual_lr:g}"
    if args.dual_every is not None:
        over["dual_every"], tag = args.dual_every, tag + f"-de{args.dual_every}"
    if args.dual_signal is not None:
        over["dual_signal"], tag = args.dual_signal, tag + f"-sig{args.dual_signal}"
    if args.lambda_max is not None:
        over["lambda_max"], tag = args.lambda_max, tag + f"-lmax{args.lambda_max:g}"
    if args.temperature is not None:
        over["temperature"] = {"dp": args.temperature, "eo": args.temperature}
        tag += f"-t{args.temperature:g}"
    return over, tag


def role_table(args: argparse.Namespace) -> int:
    """The role-attribute table: BT vs Faro-DP(role) / Faro-EO(role) (and CF), validation and test."""
    from faro_core.evaluate.metrics import load_split
    from faro_core.fairness.chance import role_chance
    from faro_core.fairness.role_stats import role_items

    out_path = args.out or str(ROOT / "bench" / "results" / "trainer_bbq_role.md")
    store = RunStore(args.runs_dir)
    strata = args.strata.split(",") if args.strata else None
    tag = "-".join(strata) if strata else "default"
    over, tune = _tuning(args)
    rows, chance_rows, out = [], [], {}
    f3 = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    for model in args.models.split(","):
        cons = [] if model == REFERENCE else [model]  # BT: the primary method with no constraint
        run_id = (f"{model}-eps{args.epsilon:g}-skew{args.skew:g}-s{args.seed}-{tag}-role"
                  f"{tune if model != REFERENCE else ''}").replace(",", "+")
        t0 = time.perf_counter()
        cfg = FaroConfig(data=args.data, skew=args.skew, constraints=cons, epsilon=args.epsilon,
                         seed=args.seed, strata=strata, epochs=args.epochs, attribute="role", **over)
        run, was_done = train_or_resume(cfg, store, run_id=run_id)
        seconds = train_seconds(run) if was_done else time.perf_counter() - t0
        m = run.metrics()
        label = family(cons, args.epsilon) + ("(role)" if model in ("dp", "eo") else "")
        sp = {"val": m, "test": m.get("test", {})}
        chance = {}
        for split in ("val", "test"):
            chance[split] = role_chance(role_items(load_split(run, split)), n_perm=2000, seed=0)
        out[model] = {"run_id": run_id, "seconds": seconds, "selected_by": m.get("selected_by"),
                      **{s: {"role": sp[s].get("role"), "violation": sp[s].get("violation"),
                             "gold_accuracy": sp[s].get("gold_accuracy"), "chance": chance[s]} for s in sp}}
        cells = []
        for s in ("val", "test"):
            r = sp[s].get("role", {})
            cells += [f3(r.get("dp")), f3(r.get("eo")), f3(r.get("p_biased_over_counter")),
                      f"{f3(r.get('rate_biased_vs_unknown'))} / {f3(r.get('rate_counter_vs_unknown'))}",
                      f"{f3(r.get('acc_biased'))} / {f3(r.get('acc_counter'))}",
                      f3(sp[s].get("violation", {}).get("cf")), f3(sp[s].get("gold_accuracy"))]
        rows.append(f"| {label} | " + " | ".join(cells) + f" | {m.get('selected_by')} | {seconds:.0f} |")
        chance_rows.append(f"| {label} | " + " | ".join(
            f"{c[k]['observed']:.3f} ({c[k]['chance_median']:.3f}, {c[k]['chance_p90']:.3f}; p {c[k]['p_value']:.4f})"
            for s in ("val", "test") for c in [chance[s]] for k in ("dp", "eo")) + " |")
    any_m = run.metrics()
    n = {s: (any_m if s == "val" else any_m.get("test", {})).get("role", {}) for s in ("val", "test")}
    cmd = " ".join(["python bench/trainer_bbq.py", *sys.argv[1:]])
    md = ["# Trainer on BBQ, attribute = stereotype role: plain BT vs Faro", "",
          f"`{cmd}` — {time.strftime('%Y-%m-%d %H:%M')}. BBQ (5 categories), skew ρ = {args.skew:g}, head mode, "
          f"seed {args.seed}, ε = {args.epsilon:g}, strata {strata or 'context_condition (the role default)'}"
          f"{', dual overrides ' + str(over) if over else ''}. "
          "v_DP = |P(r_biased > r_counter) − ½| over ambiguous items (ties ½); v_EO = |acc_biased − acc_counter| / 2 "
          "over disambiguated items, item-level accuracy (the correct answer has the top reward of the three); "
          "b / c vs unknown = share of ambiguous items where that role's answer beats 'unknown'. "
          f"Items: validation {n['val'].get('n_dp')} ambiguous, {n['val'].get('n_biased')} / "
          f"{n['val'].get('n_counter')} disambiguated (biased / counter correct); test {n['test'].get('n_dp')}, "
          f"{n['test'].get('n_biased')} / {n['test'].get('n_counter')}.", "",
          "| model | val v_DP | val v_EO | val P(b>c) | val b / c vs unknown | val acc_b / acc_c | val CF | val gold acc "
          "| test v_DP | test v_EO | test P(b>c) | test b / c vs unknown | test acc_b / acc_c | test CF | test gold acc "
          "| selected by | train s |", "|" + "---|" * 17, *rows, "",
          "Role violations against their chance level: observed (median and 90th percentile of the null, 2,000 "
          "permutations: DP, the two people's roles swapped at random within each item; EO, the correct answer's "
          "role permuted within category x polarity; p = (1 + share at least as large) / 2,001, "
          "`faro_core.evaluate.chance.role_chance`).", "",
          "| model | val DP | val EO | test DP | test EO |", "|---|---|---|---|---|", *chance_rows, ""]
    Path(out_path).write_text("\n".join(md))
    print("\n".join(md))
    if args.json:
        print(json.dumps(out, default=float))
    return 0


BENCH = Benchmark("trainer_bbq", "study", "BT against Faro-DP/EO/CF on BBQ with skew 0.3",
                  run=main, quick=("--epochs", "2"), md="--out", runs_dir=True)

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
