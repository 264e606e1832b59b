"""``faro data summary SOURCE``: what a preference dataset holds (items, pairs, groups, strata, twins, skew)."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from faro_core.errors import FaroError

FORMAT_CHOICES = ("bbq", "crows", "hh", "trl", "csv", "jsonl", "parquet", "demo", "hub")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("data", help="inspect preference data", description="Inspect preference data.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    s = sub.add_parser("summary", help="summarize a dataset (items, pairs, groups, strata, twins, skew)")
    s.add_argument("source", help="path (file or folder), hub id, or 'demo'")
    s.add_argument("--format", choices=FORMAT_CHOICES, default=None, help="default: detected from the path")
    s.add_argument("--group", default=None, help="column to use as the pair-level group")
    s.add_argument("--strata", default=None, help="comma-separated strata columns (default: the loader's)")
    s.add_argument("--groups", default=None, help="comma-separated group values to keep")
    s.add_argument("--columns", default=None,
                   help="column mapping for generic tables: ours=theirs,... or a JSON object")
    s.add_argument("--skew", type=float, default=0.0, help="fraction of eligible ambiguous items to skew")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_summary)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _parse_columns(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    if text.strip().startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FaroError(f"--columns: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise FaroError("--columns: expected a JSON object {ours: theirs}")
        return {str(k): str(v) for k, v in obj.items()}
    out = {}
    for part in text.split(","):
        if "=" not in part:
            raise FaroError(f"--columns: expected ours=theirs, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _table(summary: dict[str, Any]) -> str:
    lines = [f"dataset   {summary['name']} ({summary['format']}) from {summary['source'] or '-'}",
             f"items     {summary['items']}",
             f"pairs     {summary['pairs']}",
             f"twins     {summary['twins']}",
             f"skewed    {summary['skewed']} pairs / {summary['skewed_items']} items (rho={summary['skew']}, "
             f"seed={summary['seed']})",
             f"gold      {summary['gold']}"]
    if "target_coverage" in summary:
        tc = summary["target_coverage"]
        lines.append(f"targets   {tc['with_target']}/{tc['items']} items ({100 * tc['coverage']:.1f}%)")
    for title, key in (("categories (items)", "categories"), ("groups (pairs)", "groups"),
                       ("response groups (responses)", "response_groups"), ("strata (pairs)", "strata_counts")):
        d = summary[key]
        if not d:
            continue
        lines.append(f"\n{title}")
        w = max(len(str(k)) for k in d)
        lines.extend(f"  {str(k):<{w}}  {v:>7}" for k, v in d.items())
    if summary["warnings"]:
        lines.append("\nwarnings")
        lines.extend(f"  - {w}" for w in summary["warnings"])
    return "\n".join(lines)


def _summary(args: argparse.Namespace) -> int:
    from faro_core.data import load
    from faro_core.data.summary import summarize

    if not (math.isfinite(args.skew) and 0.0 <= args.skew <= 1.0):
        raise FaroError(f"--skew must be in [0, 1], got {args.skew}")
    strata = [s.strip() for s in args.strata.split(",") if s.strip()] if args.strata else None
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    data = load(args.source, format=args.format, group=args.group, strata=strata, skew=args.skew,
                seed=args.seed, columns=_parse_columns(args.columns), groups=groups)
    summary = summarize(data)
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    else:
        print(_table(summary))
    return 0
