"""``faro sweep``: a grid of constrained trainings and baselines, in parallel, resumable."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from faro_core.io import to_json


def parse_floats(s: str) -> list[float]:
    """``"0.1,0.05,inf"`` -> [0.1, 0.05, inf]."""
    from faro_core.errors import FaroError

    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError as exc:
        raise FaroError(f"bad number list {s!r}: {exc}") from exc


def parse_seeds(s: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> list of ints."""
    from faro_core.errors import FaroError

    out: list[int] = []
    try:
        for part in s.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError as exc:
        raise FaroError(f"bad seed list {s!r}: use 0,1,2 or 0-4") from exc
    return out


def spec_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~faro_core.studies.grid.SweepSpec` a ``faro sweep`` command line asks for (also what the
    launcher reads to know a launched sweep's run ids)."""
    from faro_core.cli.config_flags import config_from_args
    from faro_core.studies.grid import SweepSpec, parse_baselines

    base = config_from_args(args)
    kinds = [k.strip().lower() for k in args.constraints.split(",") if k.strip() and k.strip() != "none"]
    data_seeds = parse_seeds(args.data_seeds) if getattr(args, "data_seeds", None) else None
    return SweepSpec(base=base, kinds=kinds, epsilons=parse_floats(args.epsilons), seeds=parse_seeds(args.seeds),
                     baselines=parse_baselines(args.baselines), name=args.name, n_boot=args.n_boot,
                     delta=args.delta, certify_epsilon=args.certify_epsilon, data_seeds=data_seeds)


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
    p.add_argument("--constraints", default="dp", help="kinds to sweep, e.g. dp,eo,cf (default dp)")
    p.add_argument("--epsilons", default="0.1,0.05", help="comma-separated slacks (default 0.1,0.05)")
    p.add_argument("--seeds", default="0", help="training seeds: 0,1,2 or 0-4 (default 0)")
    p.add_argument("--data-seeds", default=None, metavar="SEEDS",
                   help="data draws (split and skewed items) crossed with --seeds: 0,1,2 or 0-9 (default: "
                   "--data-seed alone)")
    p.add_argument("--baselines", default="none", help="all or some of bt,reweight,posthoc (oracle),fixed_lambda,"
                   "select_only,expgrad,expgrad_head,group_dro,fair_reg")
    add_config_flags(p, for_sweep=True)
    add_store_args(p)
    p.add_argument("--name", default="sweep", help="sweep name (table in RUNS_DIR/_sweeps/NAME)")
    p.add_argument("--workers", type=int, default=2, help="parallel training processes (default 2)")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--engine", choices=["batched", "serial"], default="batched",
                   help="batched (default): head-mode members that share data and model settings train as one "
                   "batched model in one job (same runs, same ids); serial: one training per job")
    p.add_argument("--memory-mb", type=float, default=None,
                   help="host memory one batch may take (default 2048); larger grids are split into batches")
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples per evaluation")
    p.add_argument("--delta", type=float, default=0.05, help="certificate failure probability")
    p.add_argument("--certify-epsilon", type=float, default=0.05,
                   help="epsilon at which every run is also certified per kind (default 0.05)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_sweep_cmd)


def sweep_run_ids(argv: Sequence[str]) -> list[str]:
    """The run ids a ``faro sweep`` command line (as :func:`faro_core.train.launch.sweep_argv` builds it) trains: its grid, read
    through the CLI's own parser."""
    from faro_core.cli import build_parser  # function-level: the package imports this module
    from faro_core.studies.grid import grid, run_id_for

    args = build_parser().parse_args(list(argv)[3:])
    return [run_id_for(c) for c in grid(spec_from_args(args))]
