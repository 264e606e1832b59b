"""Validate `faro data bbq-build` against the published BBQ files and report the built categories.

Reads the templates from ../shared/data/bbq_templates and the published files from ../shared/data/bbq
(or --templates / --published). Prints two tables (markdown):

1. Published categories: strata with matching item counts (question_index x polarity x context condition),
   the share of built items equal to a published item (strict, and with the "unknown" answer's wording set
   aside), the classes of the rest, and the share of published items the builder can reach (an exhaustive
   build: every vocabulary pair and lexical variant).
2. Built categories: item count against the published count, proper names checked against the vocabulary,
   and the role coverage (share of items with a derivable biased answer, `biased_idx`).

Usage: python bench/bbq_build_validate.py [--seed 0] [--out DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import Benchmark  # noqa: E402

from faro_core.data.bbq import load_bbq_items  # noqa: E402
from faro_core.data.bbq_build import (  # noqa: E402
    Vocabulary,
    build_bbq,
    build_category,
    compare_with_published,
    proper_name_check,
    reachable_share,
    read_csv_rows,
    template_categories,
)

PUBLISHED_COUNTS = {"Age": 3680, "Disability_status": 1556, "Gender_identity": 5672, "Nationality": 3080,
                    "Race_ethnicity": 6880, "Race_x_SES": 11160, "Race_x_gender": 15960, "Religion": 1200,
                    "SES": 6864, "Sexual_orientation": 864}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--templates", default=str(ROOT.parent / "shared/data/bbq_templates"))
    ap.add_argument("--published", default=str(ROOT.parent / "shared/data/bbq"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="keep the built folder here (default: a temp folder)")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--md", default=None, help="also write the printed tables to this markdown file")
    args = ap.parse_args()
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text)
        lines.append(str(text))
    tdir, pdir = Path(args.templates), Path(args.published)
    if not tdir.is_dir():
        say(f"templates folder {tdir} not found; nothing to validate")
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bbq_build_"))
    t0 = time.perf_counter()
    summary = build_bbq(tdir, out, seed=args.seed)
    build_s = time.perf_counter() - t0
    voc = Vocabulary.from_dir(tdir)
    cats = template_categories(tdir)
    res: dict = {"seed": args.seed, "build_seconds": round(build_s, 2), "out": str(out), "published": {},
                 "built": {}}

    where = f" -> {out}" if args.out else ""
    say(f"built {sum(summary['categories'].values())} items in {build_s:.1f} s (seed {args.seed}){where}\n")
    say("| category | items built / published | strata with equal counts | exact | exact up to unknown "
          "wording | other draw of words/names | context in published, answers differ | stratum not "
          "published | published items reachable |")
    say("|---|---|---|---|---|---|---|---|---|")
    for cat in sorted(cats):
        pub = pdir / f"{cat}.jsonl"
        if not pub.exists():
            continue
        built = _records(out / f"{cat}.jsonl")
        published = _records(pub)
        cmp = compare_with_published(built, published)
        ex, _ = build_category(cat, read_csv_rows(cats[cat]), voc, seed=args.seed, exhaustive=True)
        reach = reachable_share(ex, published)
        cl, n = cmp["classes"], cmp["built"]
        res["published"][cat] = {**cmp, "reachable": reach}
        say(f"| {cat} | {n} / {cmp['published']} | {cmp['strata_matching']}/{cmp['strata']} | "
              f"{100 * cmp['exact']:.1f}% | {100 * cmp['exact_up_to_unknown_wording']:.1f}% | "
              f"{100 * cl.get('other_pair', 0) / n:.1f}% | {100 * cl.get('same_context_other_answers', 0) / n:.1f}% | "
              f"{100 * cl.get('stratum_missing', 0) / n:.1f}% | {100 * reach['share']:.1f}% |")
        if cmp["count_differences"]:
            say(f"|  | strata that differ (built, published): {cmp['count_differences']} |||||||| ")
    say("\n| category | items built | published count | difference | proper names checked | wrong group | "
          "role coverage (biased answer derivable) |")
    say("|---|---|---|---|---|---|---|")
    for cat in sorted(cats):
        built = _records(out / f"{cat}.jsonl")
        items = load_bbq_items(out / f"{cat}.jsonl")
        cov = float(items["biased_idx"].notna().mean())
        names = proper_name_check(built, voc)
        ref = PUBLISHED_COUNTS.get(cat)
        diff = f"{100 * (len(built) - ref) / ref:+.1f}%" if ref else "-"
        mark = "" if (pdir / f"{cat}.jsonl").exists() else " (no published file here)"
        res["built"][cat] = {"items": len(built), "published_count": ref, "names": names, "role_coverage": cov}
        say(f"| {cat}{mark} | {len(built)} | {ref or '-'} | {diff} | {names['names']} | {names['wrong']} | "
              f"{100 * cov:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")
    return 0


BENCH = Benchmark("bbq_build_validate", "study", "faro data bbq-build against the published BBQ files",
                  run=main, quick=(), json="path", md="--md")

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
