"""``faro policy``: does the reward's fairness transfer to the KL-regularized policy?

    faro policy RUN... [--beta B ...] [--runs-dir DIR] [--data SOURCE] [--split test] [--lm ID]
                       [--limit N] [--generate --n 4 --prompts 20] [--json]
    faro policy finetune RUN --steps N [--kl-coef 0.05] [--lm ID] [--output-dir DIR]
    faro policy generate [RUN...] [--prompts 50] [--n 16] [--lm ID] [--temperature T] [--top-p P]
                         [--max-new-tokens N] [--system TEXT] [--max-seconds S] [--out FILE] [--ship]

The first form builds the exact Gibbs policy π_β ∝ π_ref · exp(r/β) over each BBQ item's three answers
for the reference LM and each run's reward, sweeps β and writes ``policy.json`` into each run directory
(and, with ``--generate``, ``policy_generations.parquet``). The second runs KL-regularized RLOO
fine-tuning of the LM with the run's reward (a GPU job; a few steps work on a CPU). The third regenerates
the best-of-n replies (``n`` per prompt, ambiguous BBQ test prompts of the runs' split, or of the demo's
without RUNs) with a progress bar, then scores them under each RUN's reward (``policy_generations.parquet``).
It resumes where it stopped (replies are cached per prompt); ``--max-seconds`` stops early (exit 3: run it
again to go on); ``--ship`` (maintainers) writes them as the demo's shipped replies.
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
                   help="π_ref precision: float32 (exact) or bfloat16 (faster on CPUs with AMX, approximate; docs/POLICY.md)")
    p.add_argument("--normalize", choices=("sum", "mean"), default="sum",
                   help="π_ref answer score: summed (default) or per-token mean log-likelihood")
    p.add_argument("--generate", action="store_true", help="also sample n replies per prompt and rerank them")
    p.add_argument("--n", type=int, default=None, help="samples per prompt (--generate: 4; generate: 16)")
    p.add_argument("--prompts", type=int, default=None, help="number of prompts (--generate: 20; generate: 50)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="(--generate: 48; generate: the demo's 40)")
    p.add_argument("--temperature", type=float, default=None, help="(--generate: 0.8; generate: the demo's 0.7)")
    p.add_argument("--top-p", type=float, default=None, help="(--generate: 0.95; generate: the demo's 0.9)")
    p.add_argument("--system", default=None, help="system turn (generate; default the demo's on-topic one; '' none)")
    p.add_argument("--max-seconds", type=float, default=None, help="generate: stop starting prompts after S s")
    p.add_argument("--out", default=None, help="generate: also write the replies to this Parquet file")
    p.add_argument("--ship", action="store_true", help="generate: write them as the demo's shipped replies")
    p.add_argument("--prompt-format", choices=("open", "options"), default=None,
                   help="generate: 'open' (context + question) or 'options' (+ the three answers); default the demo's")
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
    if args.runs[0] == "generate":
        return _generate(args, store)
    args.n = 4 if args.n is None else args.n
    args.prompts = 20 if args.prompts is None else args.prompts
    args.max_new_tokens = 48 if args.max_new_tokens is None else args.max_new_tokens
    args.temperature = 0.8 if args.temperature is None else args.temperature
    args.top_p = 0.95 if args.top_p is None else args.top_p
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
        from faro_core.policy.generate import GenerationConfig
        from faro_core.policy.rerank import rerank_runs

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
        _print_generation(gen)


def _print_generation(gen: dict[str, Any]) -> None:
    """The generation summary: each reward's best-of-n choices by class (role counts with intervals when
    the prompts have roles)."""
    print(f"\ngeneration: {gen['n_prompts']} prompts × {gen['n']} samples in {gen['seconds']:.1f} s"
          + (" (shipped replies)" if gen.get("shipped") else "")
          + (f"; filtered replies: {gen['filtered']}" if gen.get("filtered") else ""))

    def row(sh: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in sh.items())

    print(f"  samples (π_ref): {row(gen['samples'])}")
    rc = gen.get("role_counts", {}).get("models", {})
    for name, s in gen["models"].items():
        print(f"  {name[:40]} best-of-n: {row(s['best_of_n'])}; filtered choices {s.get('best_filtered', 0)}")
        e = rc.get(name)
        if e:
            cells = [f"{c} {e['counts'][c]} ({e['shares'][c]['lo']:.2f}–{e['shares'][c]['hi']:.2f})"
                     for c in e["counts"]]
            print(f"    choices by role: {'; '.join(cells)}")
            if "vs_baseline" in e:
                d = e["vs_baseline"]
                print("    vs BT: " + "; ".join(f"{c} {d[c]['value']:+.2f} [{d[c]['lo']:+.2f}, {d[c]['hi']:+.2f}]"
                                               for c in d) + f"; {e.get('differing_prompts', 0)} prompts differ")


def _finetune(args: argparse.Namespace, store: Any) -> int:
    if len(args.runs) != 2:
        raise FaroError("usage: faro policy finetune RUN --steps N")
    run = store.get(args.runs[1])
    from faro_core.policy.rlhf import RLOOSettings, finetune

    settings = RLOOSettings(steps=args.steps, kl_coef=args.kl_coef, seed=args.seed,
                            max_new_tokens=48 if args.max_new_tokens is None else args.max_new_tokens,
                            temperature=0.8 if args.temperature is None else args.temperature)
    out = finetune(run, lm=args.lm, settings=settings, data=args.data, output_dir=args.output_dir,
                   n_prompts=args.prompts, progress=_progress(args))
    print(to_json(out) if args.json else json.dumps(out, indent=2, default=str))
    return 0


def generation_settings(args: argparse.Namespace) -> Any:
    """The demo's :data:`~faro_core.policy.replies.DEMO_GENERATION` with the flags given replacing its
    fields."""
    from dataclasses import replace

    from faro_core.policy.replies import DEMO_GENERATION

    over: dict[str, Any] = {}
    for flag, field in (("n", "n"), ("max_new_tokens", "max_new_tokens"), ("temperature", "temperature"),
                        ("top_p", "top_p")):
        if getattr(args, flag) is not None:
            over[field] = getattr(args, flag)
    if args.system is not None:
        over["system"] = args.system or None
    if args.seed:
        over["seed"] = args.seed
    cfg = replace(DEMO_GENERATION, **over)
    if cfg.n < 1 or cfg.max_new_tokens < 1 or cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
        raise FaroError("need --n >= 1, --max-new-tokens >= 1, --temperature >= 0 and 0 < --top-p <= 1")
    return cfg


def _generate(args: argparse.Namespace, store: Any) -> int:
    from faro_core.policy.evaluate import load_items, run_data_source, split_item_ids
    from faro_core.policy.gibbs import DEFAULT_BETAS
    from faro_core.policy.replies import (
        DEMO_N_PROMPTS,
        DEMO_PROMPT_FORMAT,
        config_test_item_ids,
        demo_prompt_items,
        generate_replies,
        replies_key,
        ship_replies,
    )
    from faro_core.policy.rerank import rerank_runs

    runs = [store.get(r) for r in dict.fromkeys(args.runs[1:])]
    cfg = generation_settings(args)
    n_prompts = DEMO_N_PROMPTS if args.prompts is None else args.prompts
    if n_prompts < 1:
        raise FaroError("--prompts must be >= 1")
    say = _progress(args)
    source = args.data or next((s for s in map(run_data_source, runs) if s), None)
    items = load_items(source)
    ids: set[str] | None = None
    for run in runs:
        s = split_item_ids(run, "test")
        if s is not None:
            ids = s if ids is None else ids & s
    if ids is None:
        if source not in (None, "demo"):
            raise FaroError("give RUNs (their test split picks the prompts) or use the demo data")
        from faro_core.studies.demo import demo_split_config

        ids = config_test_item_ids(demo_split_config())
    fmt = args.prompt_format or DEMO_PROMPT_FORMAT
    prompts = demo_prompt_items(ids, n_prompts=n_prompts, seed=args.seed, items=items, prompt_format=fmt)
    say(f"{len(prompts)} prompts x {cfg.n} replies ({cfg.key()})")
    replies, missing = generate_replies(prompts, cfg, lm=args.lm, max_seconds=args.max_seconds,
                                        progress=True)
    if missing:
        say(f"{len(prompts) - missing} of {len(prompts)} prompts done; run the same command again to go on")
        return 3
    if args.out:
        from faro_core.io import write_parquet

        write_parquet(args.out, replies)
        say(f"wrote {len(replies)} replies to {args.out}")
    if args.ship:
        from faro_core.paths import DEMO_DATA_DIR

        path = ship_replies(replies, DEMO_DATA_DIR / "cache", replies_key(args.lm, cfg, prompt_format=fmt), cfg, fmt)
        say(f"shipped {len(replies)} replies: {path} ({path.stat().st_size} bytes)")
    if runs:
        gen = rerank_runs(runs, items, config=cfg, lm=args.lm, betas=list(DEFAULT_BETAS), replies=replies,
                          progress=say)
        for run in runs:
            pol = run.read("policy.json")
            if pol:
                run.write("policy.json", {**pol, "generation": gen})
        if args.json:
            print(to_json(gen))
        else:
            _print_generation(gen)
    return 0
