"""``faro sweep``: a grid of constrained trainings and baselines, in parallel, resumable."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from faro_core.io import to_json


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~faro_core.studies.grid.SweepSpec` a ``faro sweep`` command line asks for: the base config from
    the settings flags, the grid from the flags :func:`add_spec_flags` generated (a flag left out: the
    field's default in ``SweepSpec``)."""
    from faro_core.cli.config_flags import config_from_args
    from faro_core.studies.grid import spec_fields, spec_from_flags

    given = {f.name: getattr(args, f.name) for f in spec_fields() if hasattr(args, f.name)}
    return spec_from_flags(config_from_args(args), given)


def add_spec_flags(p: argparse.ArgumentParser) -> None:
    """One flag per :class:`~faro_core.studies.grid.SweepSpec` field (its ``flag``, help and default; a bool
    field is a switch)."""
    from faro_core.studies.grid import spec_default_text, spec_fields

    for f in spec_fields():
        md = f.metadata
        if f.type in ("bool", bool):
            p.add_argument(md["flag"], dest=f.name, action="store_true", default=argparse.SUPPRESS, help=md["help"])
            continue
        default = spec_default_text(f)
        p.add_argument(md["flag"], dest=f.name, default=argparse.SUPPRESS, metavar=f.name.upper(),
                       help=(md["help"] + (f" (default {default})" if default else "")).replace("%", "%%"))


def run_sweep_cmd(args: argparse.Namespace) -> int:
    from faro_core.studies.sweep import run_sweep

    spec = spec_from_args(args)
    runs_dir = args.runs_dir or "runs"

    def progress(row: dict) -> None:
        if not args.quiet:
            tag = "skipped (done)" if row.get("skipped") else f"{row.get('job_seconds', 0):.1f}s"
            print(f"  {row['run_id']}: gold acc {row.get('gold_accuracy', float('nan')):.3f} {tag}",
                  file=sys.stderr)

    res = run_sweep(spec, runs_dir, workers=args.workers, executor=args.executor, on_done=progress,
                    engine=args.engine, memory_mb=args.memory_mb)
    table = res.pop("table")
    if args.json:
        print(to_json({**res, "run_ids": list(table["run_id"])}))
        return 0
    print(f"sweep {res['name']}: {res['runs']} runs ({res['skipped']} already done) in {res['seconds']:.1f}s; "
          f"table in {res['dir']}")
    for k, v in res["pareto"].items():
        if isinstance(v, dict) and "families" in v:
            hv = ", ".join(f"{f} {x['hypervolume']:.4f}" for f, x in v["families"].items())
            print(f"  {k}: hypervolume {hv}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from faro_core.cli.config_flags import add_config_flags
    from faro_core.cli.train_cmd import add_store_args

    p = sub.add_parser("sweep", help="grid of constrained trainings and baselines (parallel, resumable)",
                       description="Train Faro over constraint kinds x epsilons x seeds (and baselines), "
                       "evaluate and certify each run, write a sweep table and the Pareto front. Every training setting "
                       "not set by the grid is a flag; --config FILE reads them from JSON.")
    add_spec_flags(p)
    add_config_flags(p, for_sweep=True)
    add_store_args(p)
    p.add_argument("--workers", type=int, default=2, help="parallel training processes (default 2)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--engine", choices=["batched", "serial"], default="batched",
                   help="batched (default): head-mode members that share data and model settings train as one "
                   "batched model in one job (same runs, same ids); serial: one training per job")
    p.add_argument("--memory-mb", type=float, default=None,
                   help="host memory one batch may take (default 2048); larger grids are split into batches")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_sweep_cmd)
