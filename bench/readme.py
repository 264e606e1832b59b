"""Refresh docs/RESULTS.md: copy each bench/results file into it between its markers.

    python bench/readme.py           # rewrite docs/RESULTS.md from bench/results
    python bench/readme.py --check   # exit 1 (and name the blocks) if docs/RESULTS.md is stale

A block ``<!-- include: PATH -->`` ... ``<!-- end include -->`` (PATH relative to the repository root) is
replaced by that file, with its headings moved down under the section it sits in, so the results page always
shows what the scripts wrote. Exit code 1 when an included file is missing (the block is left as it is).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "RESULTS.md"
BLOCK = re.compile(r"(<!-- include: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)
# A file whose first heading is '# ' goes in two levels down ('# ' -> '### '), below the page's '## ' section.
DEMOTE_LEVELS = 2


def demote(text: str) -> str:
    """Move a '# '-headed file's headings down DEMOTE_LEVELS (capped at '######'). Files written as
    sections of the page ('## ...') go in as they are."""
    first = re.search(r"^(#+) ", text, flags=re.M)
    if not first or len(first.group(1)) > 1:
        return text
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + DEMOTE_LEVELS, 6) + " ", text, flags=re.M)


def refresh(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """Return ``text`` with every include block filled from ``root / PATH``, and the PATHs that were missing."""
    missing: list[str] = []

    def fill(m: re.Match) -> str:
        path = root / m.group("path")
        if not path.exists():
            missing.append(m.group("path"))
            return m.group(0)
        return m.group(1) + demote(path.read_text().strip()) + "\n" + m.group(4)

    return BLOCK.sub(fill, text), missing


def stale_blocks(text: str, root: Path = ROOT) -> list[str]:
    """The PATHs of include blocks whose body differs from what ``refresh`` would write."""
    fresh, _ = refresh(text, root)
    old = {m.group("path"): m.group("body") for m in BLOCK.finditer(text)}
    new = {m.group("path"): m.group("body") for m in BLOCK.finditer(fresh)}
    return [p for p in old if old[p] != new.get(p)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report stale blocks, write nothing")
    ap.add_argument("--file", type=Path, default=TARGET, help="the page to refresh (default docs/RESULTS.md)")
    args = ap.parse_args(argv)
    text = args.file.read_text()
    if args.check:
        stale = stale_blocks(text)
        for p in stale:
            print(f"stale: {p}", file=sys.stderr)
        return 1 if stale else 0
    fresh, missing = refresh(text)
    args.file.write_text(fresh)
    for p in missing:
        print(f"missing: {p}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
