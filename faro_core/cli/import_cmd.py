"""``faro import DIR --eval-data PATH``: a reward model trained by TRL (``RewardTrainer`` or Faro's
``FairRewardTrainer``) as an ordinary run of the run store (:mod:`faro_core.integrations.trl_import`)."""

from __future__ import annotations

import argparse

from faro_core.fairness.attributes import attribute_names
from faro_core.io import to_json


def _list(v: str | None) -> list[str] | None:
    return None if v is None else [c.strip() for c in v.split(",") if c.strip()]


def run_import(args: argparse.Namespace) -> int:
    from faro_core.errors import FaroError
    from faro_core.integrations.trl_import import import_run

    cols = {"attribute": args.attribute, "role_columns": _list(args.role_columns),
            "attribute_column": args.group, "strata_columns": _list(args.strata), "item_column": args.item_column,
            "pair_id_column": args.pair_id_column, "label_column": args.label_column}
    if args.group_columns is not None:
        gc = _list(args.group_columns) or []
        if len(gc) != 2:
            raise FaroError(f"--group-columns takes CHOSEN,REJECTED, got {args.group_columns!r}")
        cols.update(chosen_group_column=gc[0], rejected_group_column=gc[1])
    run = import_run(args.model_dir, args.eval_data, runs_dir=args.runs_dir, run_id=args.run_id, format=args.format,
                     split_column=args.split_column, split=args.split, train_data=args.train_data,
                     train_format=args.train_format, text=args.text, max_length=args.max_length, columns=cols,
                     constraints=_list(args.constraint), epsilon=args.epsilon, n_boot=args.n_boot)
    m, cert = run.metrics(), run.read("certificate.json") or {}
    if args.json:
        print(to_json({"run_id": run.run_id, "status": run.status, "metrics": m, "certified": cert.get("certified")}))
        return 0
    viol = ", ".join(f"{k} {v:.4f}" for k, v in (m.get("violation") or {}).items() if v is not None)
    print(f"imported {args.model_dir} as run {run.run_id} ({m.get('pairs')} held-out pairs): accuracy "
          f"{m.get('accuracy', float('nan')):.4f}, violation {viol or 'n/a'}; "
          f"{'CERTIFIED' if cert.get('certified') else 'not certified'} at eps={cert.get('epsilon')}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="a TRL-trained reward model as a run (eval, certificate, dashboard)",
                       description="Score held-out pairs with a reward model that TRL saved and write it into the "
                       "run store as a finished run: scores, metrics, eval.json and certificate.json. The "
                       "evaluation pairs must be disjoint from the training pairs (pair and item ids, from the "
                       "model's faro_dual.json or --train-data).")
    p.add_argument("model_dir", metavar="DIR", help="the model folder (TRL's output_dir or a checkpoint-N)")
    p.add_argument("--eval-data", required=True, help="held-out preference pairs (TRL/CSV/JSONL/Parquet, BBQ)")
    p.add_argument("--format", default=None, help="format of --eval-data (default: detected)")
    p.add_argument("--split-column", default=None, help="column of --eval-data naming each row's split")
    p.add_argument("--split", default=None, help="with --split-column: the held-out value (e.g. test)")
    p.add_argument("--train-data", default=None, help="the training data, to check disjointness against (needed "
                   "when DIR has no faro_dual.json)")
    p.add_argument("--train-format", default=None, help="format of --train-data")
    p.add_argument("--text", default=None, choices=["concat", "pair"], help="how the model reads a (prompt, "
                   "response): concat = TRL's prompt + response + eos, pair = a sentence pair (default: recorded)")
    p.add_argument("--max-length", type=int, default=None, help="token limit when scoring (default: recorded, else 512)")
    p.add_argument("--constraint", default=None, help="kinds to certify: dp,eo,cf (default: the trained ones)")
    p.add_argument("--epsilon", type=float, default=None, help="slack to certify (default: the trained one)")
    p.add_argument("--attribute", default=None, choices=attribute_names(),
                   help="DP/EO's attribute (default: recorded)")
    p.add_argument("--role-columns", default=None, help="CHOSEN,REJECTED role columns (attribute role)")
    p.add_argument("--group-columns", default=None, help="CHOSEN,REJECTED columns with each response's group (DP)")
    p.add_argument("--group", default=None, help="the pair-level sensitive attribute column (EO, CF)")
    p.add_argument("--strata", default=None, help="comma-separated conditioning columns")
    p.add_argument("--item-column", default=None, help="item (prompt) id column")
    p.add_argument("--pair-id-column", default=None, help="pair id column")
    p.add_argument("--label-column", default=None, help="gold label column (1: chosen is truly better)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples of eval.json")
    p.add_argument("--run-id", default=None, help="id of the new run (default: trl-<kinds>-<time>)")
    p.add_argument("--runs-dir", default=None, help="run store directory (default ./runs or $FARO_RUNS_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_import)
