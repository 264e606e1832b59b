"""``faro policy``: does the reward's fairness transfer to the KL-regularized policy?

    faro policy RUN... [--beta B ...] [--runs-dir DIR] [--data SOURCE] [--split test] [--lm ID]
                       [--limit N] [--generate --n 4 --prompts 20] [--json]
    faro policy finetune RUN --steps N [--kl-coef 0.05] [--lm ID] [--output-dir DIR]

The first form builds the exact Gibbs policy π_β ∝ π_ref · exp(r/β) over each BBQ item's three answers
for the reference LM and each run's reward, sweeps β and writes ``policy.json`` into each run directory
(and, with ``--generate``, ``policy_generations.parquet``). The second runs KL-regularized RLOO
fine-tuning of the LM with the run's reward (a GPU job; a few steps work on a CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from faro_core.errors import FaroError
from faro_core.io import to_json


def _beta(s: str) -> float:
    try:
        v = float(s)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"beta must be a number or 'inf', got {s!r}") from exc
    if math.isnan(v) or v < 0:
        raise argparse.ArgumentTypeError(f"beta must be ≥ 0, got {s!r}")
    return v


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "policy", help="Gibbs policy of each reward on BBQ (accuracy, s_AMB, s_DIS, KL over β); "
                       "'policy finetune RUN' for RLOO fine-tuning",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or: finetune RUN)")
    p.add_argument("--beta", type=_beta, nargs="+", action="extend", default=None,
                   help="β values in reward-sd units (default 0.1 0.3 1 3 10 inf); inf = π_ref")
    p.add_argument("--runs-dir", default=None, help="run store directory (default $FARO_RUNS_DIR or ./runs)")
    p.add_argument("--data", default=None,
                   help="BBQ items: a .jsonl file or folder, 'bbq' (../shared/data/bbq) or 'demo' "
                        "(default: the run's own data source, else demo)")
    p.add_argument("--split", default="test", help="train | val | test | all (default test: the runs' own split)")
    p.add_argument("--limit", type=int, default=None, help="evaluate at most N items (seeded sample)")
    p.add_argument("--lm", default=None, help="reference causal LM: hub id or path (default embedded SmolLM2)")
    p.add_argument("--lm-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="π_ref precision: float32 (exact) or bfloat16 (~4x faster on AMX CPUs, ~0.15 nats noise)")
    p.add_argument("--normalize", choices=("sum", "mean"), default="sum",
                   help="π_ref answer score: summed (default) or per-token mean log-likelihood")
    p.add_argument("--generate", action="store_true", help="also sample n replies per prompt and rerank them")
    p.add_argument("--n", type=int, default=4, help="samples per prompt (--generate)")
    p.add_argument("--prompts", type=int, default=20, help="number of prompts (--generate)")
    p.add_argument("--max-new-tokens", type=int, default=48, help="(--generate)")
    p.add_argument("--temperature", type=float, default=0.8, help="(--generate)")
    p.add_argument("--top-p", type=float, default=0.95, help="(--generate)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=50, help="RLOO steps (finetune)")
    p.add_argument("--kl-coef", type=float, default=0.05, help="KL coefficient β of RLOO (finetune)")
    p.add_argument("--output-dir", default=None, help="where the fine-tuned LM goes (finetune; default in the run)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run_policy)


def _progress(args: argparse.Namespace) -> Any:
    return (lambda s: print(f"[policy] {s}", file=sys.stderr, flush=True))


def run_policy(args: argparse.Namespace) -> int:
    from faro_core.store.runs import RunStore

    store = RunStore(args.runs_dir)
    if args.runs[0] == "finetune":
        return _finetune(args, store)
    from faro_core.policy.evaluate import (
        evaluate_policies,
        load_items,
        run_data_source,
        select_items,
        write_policy,
    )
    from faro_core.policy.gibbs import DEFAULT_BETAS

    runs = [store.get(r) for r in dict.fromkeys(args.runs)]  # RunError (exit 2) on an unknown run
    if args.n < 1 or args.prompts < 1:
        raise FaroError("--n and --prompts must be ≥ 1")
    say = _progress(args)
    source = args.data or next((s for s in map(run_data_source, runs) if s), None)
    items = select_items(load_items(source), runs, split=args.split, seed=args.seed, limit=args.limit)
    betas = args.beta or list(DEFAULT_BETAS)
    result = evaluate_policies(runs, items, betas=betas, lm=args.lm, normalize=args.normalize, progress=say,
                               dtype=args.lm_dtype)
    result.update({"data": source or "demo", "split": args.split})
    if args.generate:
        from faro_core.policy.generate import GenerationConfig, rerank_runs

        gcfg = GenerationConfig(n=args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=args.seed)
        result["generation"] = rerank_runs(runs, items, n_prompts=args.prompts, config=gcfg, lm=args.lm,
                                           betas=betas, progress=say)
    write_policy(runs, result)
    if args.json:
        print(to_json(result))
    else:
        _print_table(result)
    return 0


def _print_table(result: dict[str, Any]) -> None:
    print(f"BBQ policy ({result['n_items']} items, split {result.get('split')}, LM {result['lm']}, "
          f"π_ref {result['normalize']}; expected values under π)")
    print(f"{'model':<40} {'beta':>6} {'acc':>6} {'s_amb':>7} {'s_dis':>7} {'KL':>7} {'E[r]':>7}")
    for name, m in result["models"].items():
        for i, b in enumerate(m["betas"]):
            if name == "reference" and i < len(m["betas"]) - 1:
                continue
            print(f"{name[:40]:<40} {b:>6g} {m['accuracy'][i]:>6.3f} {m['s_amb'][i]:>7.3f} "
                  f"{m['s_dis'][i]:>7.3f} {m['kl'][i]:>7.4f} {m['expected_reward'][i]:>7.3f}")
    gen = result.get("generation")
    if gen:
        print(f"\ngeneration: {gen['n_prompts']} prompts × {gen['n']} samples in {gen['seconds']:.1f} s")
        sh = gen["samples"]
        print(f"  samples (π_ref):  target/other/both/neither = {sh['target']:.2f}/{sh['other']:.2f}/"
              f"{sh['both']:.2f}/{sh['neither']:.2f}, biased {sh['biased']:.2f}")
        for name, s in gen["models"].items():
            bo = s["best_of_n"]
            print(f"  {name[:30]} best-of-n: target/other/both/neither = {bo['target']:.2f}/{bo['other']:.2f}/"
                  f"{bo['both']:.2f}/{bo['neither']:.2f}, biased {bo['biased']:.2f}")


def _finetune(args: argparse.Namespace, store: Any) -> int:
    if len(args.runs) != 2:
        raise FaroError("usage: faro policy finetune RUN --steps N")
    run = store.get(args.runs[1])
    from faro_core.policy.rlhf import RLOOSettings, finetune

    settings = RLOOSettings(steps=args.steps, kl_coef=args.kl_coef, seed=args.seed,
                            max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    out = finetune(run, lm=args.lm, settings=settings, data=args.data, output_dir=args.output_dir,
                   n_prompts=args.prompts if args.prompts != 20 else None, progress=_progress(args))
    print(to_json(out) if args.json else json.dumps(out, indent=2, default=str))
    return 0
