"""``faro report RUN... --out report.html``: the self-contained stakeholder report (HTML, no CDN)."""

from __future__ import annotations

import argparse

from faro_core.io import to_json


def run_report(args: argparse.Namespace) -> int:
    """Write the HTML report for the given runs."""
    from faro_core.results.report import write_report
    from faro_core.store.runs import RunStore

    store = RunStore(args.runs_dir)
    ids = list(args.runs)
    if ids == ["all"]:
        ids = [r.run_id for r in store.list()]
    path = write_report(store, ids, args.out, title=args.title, before=args.before, after=args.after)
    out = {"out": str(path), "runs": ids, "bytes": path.stat().st_size}
    print(to_json(out) if args.json else f"wrote {path} ({out['bytes'] / 1e6:.1f} MB, {len(ids)} runs)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``faro report`` to the CLI."""
    p = sub.add_parser("report", help="self-contained HTML report for stakeholders",
                       description="One HTML file (plotly inline, works offline): data and groups, runs, the "
                                   "accuracy-fairness front, certificates, per-group plots, generations, summary.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids ('all' for every run in the store)")
    p.add_argument("--out", default="report.html", help="output file (default report.html)")
    p.add_argument("--runs-dir", default=None, help="run store directory (default ./runs or $FARO_RUNS_DIR)")
    p.add_argument("--title", default="Faro fairness report")
    p.add_argument("--before", default=None, help="baseline run of the per-group plots (default: first BT run)")
    p.add_argument("--after", default=None, help="Faro run of the per-group plots (default: first Faro run)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run_report)
