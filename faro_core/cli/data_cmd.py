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
    s.add_argument("--seed", type=int, default=0, help="seed of the skew and of the split")
    s.add_argument("--split-by", default=None, metavar="UNIT",
                   help="split unit whose clusters per split are counted: template, item or column:NAME "
                        "(default: template on BBQ-format data, else item)")
    s.add_argument("--val-frac", type=float, default=None, help="validation fraction (default: the unit's)")
    s.add_argument("--test-frac", type=float, default=None, help="test fraction (default: the unit's)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=_summary)
    b = sub.add_parser("bbq-build", help="build BBQ-format items from BBQ templates (or your own)",
                       description="Expand BBQ template CSVs (with vocabulary.csv and "
                                   "vocabulary_proper_names.csv in the same folder) into CATEGORY.jsonl files.")
    b.add_argument("templates_dir", help="folder of CATEGORY.csv templates and the two vocabularies")
    b.add_argument("out_dir", help="folder to write CATEGORY.jsonl into (created)")
    b.add_argument("--categories", nargs="+", default=None, help="categories to build (default: all)")
    b.add_argument("--seed", type=int, default=0, help="seed of the sampled words, names and answer order")
    b.add_argument("--max-targets", type=int, default=5,
                   help="target groups (or names) drawn per template row (default 5, as published)")
    b.add_argument("--max-partners", type=int, default=5,
                   help="partners drawn per target (default 5, as published)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.set_defaults(func=_bbq_build)
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
    if "splits" in summary:
        sp = summary["splits"]
        lines.append(f"splits    by {sp['unit']} (seed {sp['seed']}): " + ", ".join(
            f"{n}: {sp['clusters'][n]} clusters / {sp['pairs'][n]} pairs" for n in ("train", "val", "test")))
    if summary["warnings"]:
        lines.append("\nwarnings")
        lines.extend(f"  - {w}" for w in summary["warnings"])
    return "\n".join(lines)


def _bbq_build(args: argparse.Namespace) -> int:
    from faro_core.data.bbq_build import SampleSizes, build_bbq

    if args.max_targets < 1 or args.max_partners < 1:
        raise FaroError("--max-targets and --max-partners must be at least 1")
    cats = [c for part in (args.categories or []) for c in part.split(",") if c.strip()] or None
    summary = build_bbq(args.templates_dir, args.out_dir, categories=cats, seed=args.seed,
                        sizes=SampleSizes(args.max_targets, args.max_partners))
    if args.json:
        print(json.dumps(summary))
        return 0
    w = max(len(c) for c in summary["categories"])
    print(f"built {sum(summary['categories'].values())} items into {summary['out']} (seed {summary['seed']})")
    for c, n in summary["categories"].items():
        print(f"  {c:<{w}}  {n:>6}")
    for c, notes in summary["notes"].items():
        for n in notes:
            print(f"  note: {c}: {n}")
    return 0


def _summary(args: argparse.Namespace) -> int:
    from faro_core.data import load
    from faro_core.data.summary import summarize

    if not (math.isfinite(args.skew) and 0.0 <= args.skew <= 1.0):
        raise FaroError(f"--skew must be in [0, 1], got {args.skew}")
    strata = [s.strip() for s in args.strata.split(",") if s.strip()] if args.strata else None
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    data = load(args.source, format=args.format, group=args.group, strata=strata, skew=args.skew,
                seed=args.seed, columns=_parse_columns(args.columns), groups=groups)
    from faro_core.train.config import default_split_by

    unit = args.split_by or default_split_by(args.source, args.format)
    summary = summarize(data, split_by=unit, val_frac=args.val_frac, test_frac=args.test_frac, seed=args.seed)
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    else:
        print(_table(summary))
    return 0
