"""Trainer acceptance on BBQ: plain BT vs Faro-DP/EO/CF (head mode, skew 0.3), validation and test numbers.

    python bench/trainer_bbq.py [--epsilon 0.05] [--seed 0] [--strata question_polarity,context_condition]
                                [--runs-dir runs/trainer_bbq] [--json]

Trains each model unless a finished run with the same id is in the store, then prints a table (violations are
the largest one-sided violation over the cells with at least ``min_count`` members) and writes
``bench/results/trainer_bbq.md``. With ``--json`` the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from faro_core.evaluate.metrics import frame_to_batch, load_split, run_index  # noqa: E402
from faro_core.fairness.chance import chance_violation  # noqa: E402
from faro_core.paths import SHARED_DATA  # noqa: E402
from faro_core.store.runs import RunStore  # noqa: E402
from faro_core.train import FaroConfig, train  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA / "bbq"))
    ap.add_argument("--skew", type=float, default=0.3)
    ap.add_argument("--epsilon", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--strata", default=None, help="comma-separated (default: the data's)")
    ap.add_argument("--models", default="bt,dp,eo,cf")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "trainer_bbq"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "trainer_bbq.md"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is absent", file=sys.stderr)
        return 0
    store = RunStore(args.runs_dir)
    strata = args.strata.split(",") if args.strata else None
    tag = "-".join(strata) if strata else "default"
    rows, chance_rows, out = [], [], {}
    for model in args.models.split(","):
        cons = [] if model == "bt" else [model]
        run_id = f"{model}-eps{args.epsilon:g}-skew{args.skew:g}-s{args.seed}-{tag}".replace(",", "+")
        t0 = time.perf_counter()
        if store.has(run_id) and store.get(run_id).status == "done":
            run = store.get(run_id)
            seconds = run.read("status.json", {}).get("finished", 0) - run.read("status.json", {}).get("started", 0)
        else:
            cfg = FaroConfig(data=args.data, skew=args.skew, constraints=cons, epsilon=args.epsilon,
                             seed=args.seed, strata=strata, epochs=args.epochs)
            if store.has(run_id):
                run = train(None, store, run_id=run_id, resume=True, progress=False)
            else:
                run = train(cfg, store, run_id=run_id, progress=False)
            seconds = time.perf_counter() - t0
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
        label = "BT" if model == "bt" else "Faro-" + model.upper()
        chance_rows.append(f"| {label} | " + " | ".join(
            f"{c[k]['observed']:.3f} ({c[k]['chance_median']:.3f}, {c[k]['chance_p90']:.3f}; p {c[k]['p_value']:.2f})"
            for sp in ("val", "test") for c in [chance[sp]] for k in ("dp", "eo")) + " |")
        fmt = lambda d, k: f"{d[k]:.3f}" if d.get(k) is not None else "–"  # noqa: E731
        rows.append(f"| {'BT' if model == 'bt' else 'Faro-' + model.upper()} | {fmt(v, 'dp')} | {fmt(v, 'eo')} | "
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


if __name__ == "__main__":
    sys.exit(main())
