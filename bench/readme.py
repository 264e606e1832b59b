"""Refresh the README's results: copy each bench/results file into the README between its markers.

    python bench/readme.py

A block ``<!-- include: bench/results/NAME.md -->`` ... ``<!-- end include -->`` is replaced by that file,
with its headings moved down under the README's section, so the README always shows what the scripts wrote.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- include: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)


def demote(text: str) -> str:
    """A file whose first heading is '# ' sits under a README subsection: move its headings down three
    levels. Files written as README sections ('## ...') go in as they are."""
    first = re.search(r"^(#+) ", text, flags=re.M)
    if not first or len(first.group(1)) > 1:
        return text
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 3, 6) + " ", text, flags=re.M)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    missing = []

    def fill(m: re.Match) -> str:
        path = ROOT / m.group("path")
        if not path.exists():
            missing.append(m.group("path"))
            return m.group(0)
        return m.group(1) + demote(path.read_text().strip()) + "\n" + m.group(4)

    readme.write_text(BLOCK.sub(fill, text))
    for p in missing:
        print(f"missing: {p}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
