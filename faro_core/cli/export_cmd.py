"""``faro export RUN --out DIR [--push-to-hub REPO]``: a run as a model that loads without Faro, with its model card."""

from __future__ import annotations

import argparse
import sys

from faro_core.io import to_json


def run_export(args: argparse.Namespace) -> int:
    from faro_core.integrations.export import export_run, push_to_hub
    from faro_core.store.runs import RunStore

    run = RunStore(args.runs_dir).get(args.run)
    out = export_run(run, args.out, overwrite=args.overwrite)
    if args.push_to_hub:
        out["pushed"] = push_to_hub(args.out, args.push_to_hub, private=args.private)
    if args.json:
        print(to_json(out))
    else:
        check = out["check"]
        diff = (f"scores match the run's within {check['max_abs_diff']:.1e} on {check['pairs']} pairs"
                if "max_abs_diff" in check else f"not checked: {check['skipped']}")
        print(f"exported {run.run_id} as a {out['format']} model to {args.out} ({diff})")
        if not check.get("within_tolerance", True):
            print(f"faro: warning: the export scores up to {check['max_abs_diff']:.1e} from the run's stored scores "
                  f"(tolerance {check['tolerance']:g}); a head run trained on the shipped float16 demo features "
                  "does this: retrain with FARO_NO_SHIPPED_CACHE=1 for an exact export", file=sys.stderr)
        if out.get("pushed"):
            print(f"pushed: {out['pushed']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run as a transformers / sentence-transformers model with a model card",
                       description="Full-mode runs export as AutoModelForSequenceClassification (num_labels=1); "
                       "head-mode runs as a sentence-transformers model (Transformer, mean pooling, normalize, the "
                       "head's dense layers). The directory holds README.md (model card with hub metadata), "
                       "faro_config.json and faro_export.json.")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (absent or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--push-to-hub", default=None, metavar="REPO", help="also upload to the Hugging Face Hub repo "
                   "REPO (needs a network and a token)")
    p.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    p.add_argument("--runs-dir", default=None, help="run store directory (default ./runs or $FARO_RUNS_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_export)
