"""Write Faro's demo data: a seeded subset of the published BBQ files, ``faro_core/assets/demo_bbq/<Category>.jsonl.gz``.

    python tools/make_demo_bbq.py BBQ_DIR [--fraction 0.5] [--seed 2026]

``BBQ_DIR`` holds BBQ's published category files (``<Category>.jsonl``, from nyu-mll/BBQ, CC BY 4.0). Each
category keeps ``round(fraction * n)`` of its items, drawn by ``numpy.random.default_rng(seed)``; the records
are copied byte for byte (only the selection is Faro's), in their original order. The subset is what the
demo needs to *measure* a bias: with a 30% test split it holds ~780 ambiguous held-out items, enough for a
Clopper-Pearson margin of ~0.035 on the stereotype-role parity (docs/DATA.md). Deterministic for a seed.

After writing the data, ``python tools/make_demo_cache.py`` rebuilds the shipped feature and pi_ref caches.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "faro_core" / "assets" / "demo_bbq"  # the checkout's copy
SEED = 2026
FRACTION = 0.5


def subset_lines(path: Path, fraction: float, seed: int) -> list[str]:
    """The kept lines of one category file, in file order."""
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    # one generator per category, seeded by the category name too, so adding a category changes no other
    digest = int(hashlib.sha256(path.stem.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([seed, digest])
    keep = np.sort(rng.choice(len(lines), size=round(fraction * len(lines)), replace=False))
    return [lines[i] for i in keep]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bbq_dir", type=Path, help="folder of BBQ's published <Category>.jsonl files")
    ap.add_argument("--fraction", type=float, default=FRACTION)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    files = sorted(args.bbq_dir.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"{args.bbq_dir}: no BBQ .jsonl files")
    args.out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for f in files:
        kept = subset_lines(f, args.fraction, args.seed)
        for ln in kept:  # fail loudly on a file that is not BBQ
            rec = json.loads(ln)
            assert {"context", "question", "ans0", "answer_info", "label"} <= rec.keys(), f
        # mtime=0: the same subset gives the same bytes (a stable file for git and for cache keys)
        with gzip.GzipFile(args.out / f"{f.stem}.jsonl.gz", "wb", mtime=0) as fh:
            fh.write(("\n".join(kept) + "\n").encode("utf-8"))
        counts[f.stem] = len(kept)
    print(json.dumps({"out": str(args.out), "items": counts, "total": sum(counts.values())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
