"""``faro train``: one reward model, constrained or not, into the run store."""

from __future__ import annotations

import argparse
import json
import sys

from faro_core.io import to_json


def add_data_args(p: argparse.ArgumentParser, data_required: bool = False) -> None:
    """Data flags shared by train and sweep."""
    p.add_argument("--data", default=None, required=data_required,
                   help="source: 'demo' (default), a BBQ folder, a CSV/JSONL/Parquet file, or a hub id")
    p.add_argument("--format", default=None,
                   help="bbq|crows|hh|trl|csv|jsonl|parquet|demo (default: detected from the source)")
    p.add_argument("--attribute", choices=["group", "role"], default=None,
                   help="DP/EO's sensitive attribute: 'group' (the group a response names) or 'role' (its stereotype "
                   "role: biased, counter, or neither) (default: role on BBQ-format data, else group)")
    p.add_argument("--role-columns", default=None, metavar="CHOSEN,REJECTED",
                   help="a table's own columns with each response's role (values biased / counter; default "
                   "chosen_role,rejected_role, or derived from BBQ answer indices)")
    p.add_argument("--group", default=None, help="column holding the pair-level sensitive attribute")
    p.add_argument("--strata", default=None, help="comma-separated conditioning columns (default: the source's)")
    p.add_argument("--groups", default=None, help="comma-separated group values to keep")
    p.add_argument("--dp-scope", default=None, help="where DP holds: COLUMN=V1|V2 over a strata column, or 'all' "
                   "(default: BBQ-style data context_condition=ambig, else all)")
    p.add_argument("--dp-partner", choices=["split", "pool"], default="split",
                   help="DP compares a response's selection against partners of the same kind, naming no group "
                   "or naming one ('split', default), or pools both ('pool', the definition before 2026-11-27)")
    p.add_argument("--skew", type=float, default=0.0, help="fraction rho of ambiguous items relabelled to the "
                   "biased answer (default 0)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of skew injection and splits (default 0)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=["head", "full"], default="head")
    p.add_argument("--backbone", default=None, help="hub id or local path (default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--dual-lr", type=float, default=0.1, help="dual step size eta_lambda (small: the primal player must settle between dual steps)")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--min-count", type=int, default=30, help="cells with fewer members are not estimated")
    p.add_argument("--dual-every", type=int, default=None,
                   help="dual step every N steps (default: 20 in head mode, 5 in full mode; on small data with "
                        "few steps per epoch, lower it so the multipliers get enough steps)")
    p.add_argument("--ckpt-every", type=int, default=50, help="checkpoint every N steps")
    p.add_argument("--runs-dir", default=None, help="run store directory (default ./runs or $FARO_RUNS_DIR)")


def config_from_args(args: argparse.Namespace, **over: object):
    from faro_core.train import FaroConfig

    def split(s: str | None) -> list[str] | None:
        return [x.strip() for x in s.split(",") if x.strip()] if s else None

    kw = dict(
        data=args.data, format=args.format, attribute=args.attribute, role_columns=split(args.role_columns),
        group=args.group, strata=split(args.strata), dp_scope=args.dp_scope,
        dp_partner=args.dp_partner != "pool", groups=split(args.groups), skew=args.skew, data_seed=args.data_seed,
        mode=args.mode, backbone=args.backbone, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        dual_lr=args.dual_lr, max_length=args.max_length, min_count=args.min_count, ckpt_every=args.ckpt_every,
        dual_every=args.dual_every,
    )
    kw.update(over)
    return FaroConfig(**kw)


def run_train(args: argparse.Namespace) -> int:
    from faro_core.store.runs import RunStore
    from faro_core.train import train

    store = RunStore(args.runs_dir)
    if args.resume:
        run = train(None, store, run_id=args.resume, resume=True, progress=not args.quiet)
    else:
        config = config_from_args(args, constraints=args.constraint, epsilon=args.epsilon, seed=args.seed,
                                  method=args.method, fixed_lambda=args.fixed_lambda, name=args.name,
                                  expgrad_base=args.expgrad_base, dro_eta=args.dro_eta,
                                  fair_alpha=args.fair_alpha, fair_weight=args.fair_weight)
        run = train(config, store, run_id=args.run_id, progress=not args.quiet)
    out = {"run_id": run.run_id, "status": run.status, "path": str(run.path), "metrics": run.metrics()}
    if args.json:
        print(to_json(out))
    else:
        m = out["metrics"]
        print(f"run {run.run_id}: {run.status}", file=sys.stdout)
        print(json.dumps({k: m.get(k) for k in ("accuracy", "gold_accuracy", "violation", "feasible")}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a reward model under fairness constraints",
                       description="Train a Bradley-Terry reward model under DP/EO/CF constraints (ProxyGDA).")
    add_data_args(p)
    p.add_argument("--constraint", default="none", help="none|dp|eo|cf, or several: dp,cf (default none)")
    p.add_argument("--epsilon", type=float, default=0.05, help="slack eps of every constraint (inf: none)")
    p.add_argument("--method", default="faro",
                   help="faro (ProxyGDA) or a baseline: bt, reweight, posthoc (oracle), fixed_lambda, expgrad, "
                        "group_dro, fair_reg")
    p.add_argument("--fixed-lambda", type=float, default=1.0, help="multiplier of the fixed_lambda baseline")
    p.add_argument("--expgrad-base", choices=["linear", "head"], default="linear",
                   help="model the expgrad baseline fits each round: linear (logistic regression on feature "
                        "differences) or head (the same MLP head as Faro's)")
    p.add_argument("--dro-eta", type=float, default=0.05,
                   help="group_dro: step of the exponentiated-gradient group weights (default 0.05)")
    p.add_argument("--fair-alpha", type=float, default=2.0,
                   help="fair_reg: alpha of the alpha-fair utility of sigma(margin) (default 2; 1 = BT only)")
    p.add_argument("--fair-weight", type=float, default=1.0, help="fair_reg: weight lambda of the utility")
    add_model_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="run name (prefix of the run id)")
    p.add_argument("--run-id", default=None, help="explicit run id (default: generated)")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.set_defaults(func=run_train)
