"""``faro demo``: build the dashboard's demo sweep (BT, Faro-DP/EO/CF at a few ε, policy) if missing."""

from __future__ import annotations

import argparse
import sys

from faro_core.io import to_json


def run_demo(args: argparse.Namespace) -> int:
    """Build the demo sweep into ``--runs-dir``; idempotent (fixed run ids)."""
    from faro_core.store.runs import RunStore
    from faro_core.studies.demo import DEMO_EPOCHS, build_demo, demo_specs

    store = RunStore(args.runs_dir)
    say = (lambda s: None) if args.quiet else (lambda s: print(f"[demo] {s}", file=sys.stderr, flush=True))
    specs = demo_specs(epochs=args.epochs or DEMO_EPOCHS, seeds=tuple(range(args.seeds)))
    out = build_demo(store, specs, policy=not args.no_policy, generate=not args.no_generate,
                     n_prompts=args.prompts, progress=say)
    if args.json:
        print(to_json(out))
    else:
        print(f"demo sweep in {out['runs_dir']}: {len(out['built'])} built, {len(out['kept'])} already there "
              f"({out['seconds']:.0f} s)")
        if out.get("policy_error"):
            print(f"policy results skipped: {out['policy_error']}")
        print("next: streamlit run dashboard/app.py")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``faro demo`` to the CLI."""
    p = sub.add_parser("demo", help="build the demo sweep the dashboard opens on (idempotent)",
                       description="Train BT and Faro-DP/EO/CF at a few epsilon on the embedded demo data "
                                   "(head mode), plus policy results, into the run store if missing.")
    p.add_argument("--runs-dir", default=None, help="run store directory (default ./runs or $FARO_RUNS_DIR)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default 50)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default 1)")
    p.add_argument("--no-policy", action="store_true", help="skip the policy stage")
    p.add_argument("--no-generate", action="store_true", help="policy without scoring the shipped best-of-n replies")
    p.add_argument("--prompts", type=int, default=3, help="unused: the shipped replies set the prompts (50)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(func=run_demo)
