"""The ``faro`` command line.

Each subcommand lives in its own module here and exposes ``register(subparsers)``; the module's handler
returns an exit code. User errors (:class:`faro_core.errors.FaroError`) print one line and exit 2;
no traceback is shown unless ``FARO_DEBUG=1``. The subcommands import the pipeline inside their handlers,
so that ``faro --help`` and argument errors do not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from faro_core.errors import FaroError

# Order is the order in `faro --help`: the pipeline.
COMMAND_MODULES = (
    "data_cmd",
    "train_cmd",
    "eval_cmd",
    "sweep_cmd",
    "policy_cmd",
    "report_cmd",
    "export_cmd",
    "import_cmd",
    "runs_cmd",
    "demo_cmd",
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit code for usage errors is 2 as well
        self.print_usage(sys.stderr)
        self.exit(2, f"faro: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="faro", description="Fairness Aware Reward Optimization")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"faro_core.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"faro_core.cli.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FaroError as exc:
        print(f"faro: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("faro: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still no wall of traceback by default
        if os.environ.get("FARO_DEBUG"):
            traceback.print_exc()
        print(f"faro: internal error: {type(exc).__name__}: {exc} (set FARO_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
