"""Feature cache: extraction time of a second run on the same data over the first run's (goal <= 0.02).

    python bench/cache.py [--quick] [--rounds N] [--texts N] [--json]

Each round gets a fresh, empty cache directory (``FARO_CACHE_DIR`` semantics: a temporary ``root``). The first
run encodes the (prompt, response) texts of BBQ pairs with the embedded MiniLM (head mode, max length 256) and
writes safetensors shards; the second run is a new :class:`~faro_core.models.features.FeatureCache` on the same
directory (reads the shards, hashes the texts) asked for the same texts. Both times include building the cache
object and ``encode``; the encoder weights are loaded once beforehand for both, so model loading (which a
first run in a fresh process also pays) does not flatter the ratio. Rounds alternate first/second runs.
Writes bench/results/cache.md; with --json the last stdout line is ``{"ratio": ...}``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import bbq_source, finish, fmt_spread, machine_line, md_table, paired_ratios, quartiles


def texts(n: int) -> tuple[list[str], list[str], str]:
    """Prompts and responses of the first ``n`` texts (chosen, rejected, twins) of the benchmark data."""
    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data

    data, fmt, label = bbq_source()
    _, df, _ = load_training_data(FaroConfig(data=data, format=fmt).resolved())
    tw = df["cf_chosen"].notna()
    prompts = list(df["prompt"]) * 2 + list(df.loc[tw, "cf_prompt"]) * 2
    responses = (list(df["chosen"]) + list(df["rejected"]) + list(df.loc[tw, "cf_chosen"])
                 + list(df.loc[tw, "cf_rejected"]))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(prompts), size=min(n, len(prompts)), replace=False)
    return [prompts[i] for i in pick], [responses[i] for i in pick], label


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    import torch

    from faro_core.models.features import FeatureCache

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="under a minute: fewer texts and rounds")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--texts", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n = args.texts or (96 if args.quick else 512)
    rounds = args.rounds or (2 if args.quick else 3)
    torch.set_num_threads(2)
    prompts, responses, label = texts(n)
    warm = FeatureCache(root=tempfile.mkdtemp(prefix="faro-bench-warm-"), progress=False)
    warm._ensure_model()  # weights loaded once, shared by every first run (not timed)
    first: list[float] = []
    second: list[float] = []
    for _ in range(rounds):
        root = Path(tempfile.mkdtemp(prefix="faro-bench-cache-"))
        try:
            t0 = time.perf_counter()
            fc = FeatureCache(root=root, progress=False)
            fc._tok, fc._model = warm._tok, warm._model
            a = fc.encode(prompts, responses)
            first.append(time.perf_counter() - t0)
            assert fc.last_encoded == len(set(zip(prompts, responses)))
            t0 = time.perf_counter()
            fc2 = FeatureCache(root=root, progress=False)
            b = fc2.encode(prompts, responses)
            second.append(time.perf_counter() - t0)
            assert fc2.last_encoded == 0 and fc2._model is None and np.array_equal(a, b)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(warm.dir.parent.parent, ignore_errors=True)
    ratios = paired_ratios(second, first)
    ratio = quartiles(ratios)[1]
    rows = [["first run (encode + write shards)", fmt_spread(first, 1.0, 2), f"{n / quartiles(first)[1]:.1f}"],
            ["second run (read shards)", fmt_spread(second, 1e3, 1) + " ms", f"{n / quartiles(second)[1]:.0f}"],
            ["**second / first**", f"**{fmt_spread(ratios, 1.0, 4)}**", "goal ≤ 0.02: "
             + ("**met**" if ratio <= 0.02 else "**not met**")]]
    body = (f"{n} (prompt, response) texts of {label}, embedded all-MiniLM-L6-v2 (max length 256), "
            f"{rounds} rounds (fresh cache directory each), median [IQR]. {machine_line()}.\n\n"
            + md_table(["run", "seconds", "texts / s"], rows)
            + "\n\nProduced by `python bench/cache.py" + (" --quick" if args.quick else "") + "`.")
    finish("cache", "Feature cache: second run vs first", body, {"ratio": round(ratio, 5)}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
