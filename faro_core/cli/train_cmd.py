"""``faro train``: one reward model, constrained or not, into the run store."""

from __future__ import annotations

import argparse
import json
import sys

from faro_core.cli.config_flags import add_config_flags, config_from_args
from faro_core.io import to_json


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", default=None, help="run store directory (default ./runs or $FARO_RUNS_DIR)")


def run_train(args: argparse.Namespace) -> int:
    from faro_core.store.runs import RunStore
    from faro_core.train import train

    store = RunStore(args.runs_dir)
    if args.resume:
        run = train(None, store, run_id=args.resume, resume=True, progress=not args.quiet)
    else:
        config = config_from_args(args)
        run = train(config, store, run_id=args.run_id, progress=not args.quiet)
    out = {"run_id": run.run_id, "status": run.status, "path": str(run.path), "metrics": run.metrics()}
    if args.json:
        print(to_json(out))
    else:
        m = out["metrics"]
        print(f"run {run.run_id}: {run.status}", file=sys.stdout)
        print(json.dumps({k: m.get(k) for k in ("accuracy", "gold_accuracy", "violation", "feasible")}, indent=2))
        if m.get("role"):  # attribute role: the raw rates and the full gaps behind violation.dp / .eo (validation)
            from faro_core.cli.eval_cmd import role_lines

            print("validation split:\n" + role_lines(m["role"]))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a reward model under fairness constraints",
                       description="Train a Bradley-Terry reward model under DP/EO/CF constraints (ProxyGDA). Every "
                       "setting is a flag; --config FILE reads them from JSON (flags override).")
    add_config_flags(p)
    add_store_args(p)
    p.add_argument("--run-id", default=None, help="explicit run id (default: generated)")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(func=run_train)
