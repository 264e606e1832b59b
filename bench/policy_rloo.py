"""GPU bench: KL-regularized RLOO fine-tuning of SmolLM2 with BT vs Faro rewards, then BBQ bias of the
fine-tuned LM next to the exact Gibbs policy at the same β.

    python bench/policy_rloo.py [--models bt faro-dp] [--steps 100] [--kl-coef 0.1] [--runs-dir runs/policy_bbq]
                                [--data ../shared/data/bbq] [--skew 0.3] [--eval-items 500]

Reuses the reward runs of bench/policy_bbq.py (same names) or trains them (head mode). Writes
bench/results/policy_rloo.md and ``policy_finetune.json`` + ``policy_rloo/`` in each run; last line JSON.
Runs on a CPU too (``--steps 2`` for a smoke run), but is meant for a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Benchmark  # noqa: E402

from faro_core.paths import SHARED_DATA  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["bt", "faro-dp"], help="among bt faro-dp faro-eo faro-cf")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--kl-coef", type=float, default=0.1)
    ap.add_argument("--num-generations", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=None, help="training prompts (default: the whole train split)")
    ap.add_argument("--eval-items", type=int, default=500)
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "policy_bbq"))
    ap.add_argument("--data", default=str(SHARED_DATA / "bbq"))
    ap.add_argument("--skew", type=float, default=0.3)
    ap.add_argument("--epsilon", type=float, default=0.05)
    ap.add_argument("--lm", default=None)
    ap.add_argument("--out", default=str(RESULTS / "policy_rloo.md"))
    args = ap.parse_args(argv)

    import torch
    from policy_bbq import MODELS, train_models

    from faro_core.policy.rlhf import RLOOSettings, finetune
    from faro_core.store.runs import RunStore

    store = RunStore(args.runs_dir)
    unknown = [m for m in args.models if m not in {name for name, _, _ in MODELS}]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {[name for name, _, _ in MODELS]}")
    names = [name for name, _, _ in MODELS if name in args.models]
    runs = train_models(store, args.data, args.skew, args.epsilon, 0, False, None, only=names)
    by_name = dict(zip(names, runs))
    st = RLOOSettings(steps=args.steps, kl_coef=args.kl_coef, num_generations=args.num_generations,
                      batch_size=args.batch_size, learning_rate=args.lr, max_new_tokens=args.max_new_tokens,
                      eval_items=args.eval_items)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    rows, summaries = [], {}
    for name in args.models:
        run = by_name[name]
        t0 = time.time()
        out = finetune(run, lm=args.lm, settings=st, data=args.data, n_prompts=args.prompts,
                       progress=lambda s: print(f"[rloo] {s}", file=sys.stderr, flush=True))
        out["wall_s"] = time.time() - t0
        summaries[name] = {k: v for k, v in out.items() if k != "history"}
        b = out.get("bbq", {})
        for pol in ("reference", "gibbs", "finetuned"):
            if pol in b:
                s = b[pol]
                rows.append(f"| {name} | {pol} | {s['accuracy']:.3f} | {s['s_amb']:.3f} | {s['s_dis']:.3f} | "
                            f"{s['kl']:.4f} | {s['expected_reward']:.3f} |")
    md = ["# RLOO fine-tuning with BT vs Faro rewards (BBQ)", "",
          f"`python bench/policy_rloo.py --steps {args.steps} --kl-coef {args.kl_coef}` on {device}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}. β_KL = {args.kl_coef} in within-item reward-sd units (the Gibbs "
          f"row is the exact optimum at the same β on the 3 answers). Evaluated on {args.eval_items} held-out "
          "BBQ test items: the fine-tuned LM's answer distribution (summed log-likelihood over the 3 answers, as "
          "π_ref). KL over the 3 answers, nats per item.", "",
          "| reward | policy | accuracy | s_AMB | s_DIS | KL vs π_ref | E[r] (sd) |", "|---|---|---|---|---|---|---|",
          *rows, "", "Wall time per model: " + ", ".join(f"{k}: {v['wall_s']:.0f} s (train {v['seconds']:.0f} s)"
                                                         for k, v in summaries.items()), ""]
    Path(args.out).write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(json.dumps({"device": device, "models": summaries}, default=lambda o: None if isinstance(o, float)
                     and not math.isfinite(o) else str(o)))
    return 0


BENCH = Benchmark("policy_rloo", "gpu", "RLOO fine-tuning of SmolLM2 with BT against Faro rewards", run=main,
                  quick=(), json="", md="--out", runs_dir=True, tables=("policy_rloo_h200.md",))

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
