"""Certificate margins and coverage of the DP / EO bounds (faro_core/evaluate/bounds.py), printed as tables.

1. Margins of the role certificate at delta = 0.05 for the held-out sizes the issue names (778 ambiguous
   test items on the 5 BBQ categories, about 4,300 on all of BBQ), each bound: DP(role) alone (m = 2, a
   one-sided margin of p at delta / 2), EO(role) with n / 2 items per role, and BT's lower bound at 59.0%.
2. Coverage and tightness over seeded repetitions for cells of 50-100 members at rates near 0.03 and 0.5:
   joint coverage of all rows at delta = 0.05, and each bound's mean margin against the exact binomial one
   (each rate's Clopper-Pearson bound at delta' / 2, the rectangle) and against the oracle (the sampling
   quantile of d - d_hat under the true rates).

    python bench/certify_margins.py [--reps 1000]   # writes bench/results/certify_margins.md
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import Benchmark  # noqa: E402

from faro_core.evaluate.bounds import BOUNDS, rate_bounds  # noqa: E402
from faro_core.evaluate.certify import anchored_bounds, role_interval  # noqa: E402

CELLS = [(0.03, 50, 0.05), (0.03, 100, 0.03), (0.5, 50, 0.45), (0.5, 100, 0.5)]  # (rate, size, others' rate)


def margins_table() -> list[str]:
    out = ["| held-out items | bound | DP(role) margin at p = 1/2 | DP(role) margin, m = 4 | "
           "EO(role) margin (n/2 per role, acc 0.45) | BT lower bound at 59.0% (m = 2) |", "|---|---|---|---|---|---|"]
    for n in (778, 4300):
        for b in BOUNDS:
            dp2 = float(rate_bounds(b, 0.5, n, 0.025, k_lo=n / 2, k_hi=n / 2)[1]) - 0.5
            dp4 = float(rate_bounds(b, 0.5, n, 0.05 / 4, k_lo=n / 2, k_hi=n / 2)[1]) - 0.5
            h = n / 2
            c = (0.45, h, 0.45 * h, 0.45 * h)
            lo, up = role_interval("eo", (c, c), b, 0.05 / 4)
            k = round(0.59 * n)
            lo_bt, _ = role_interval("dp", ((k / n, float(n), float(k), float(k)),), b, 0.025)
            out.append(f"| {n} | {b} | {dp2:.4f} | {dp4:.4f} | {float(up):.4f} | {float(np.asarray(lo_bt)):.4f} |")
    return out


def coverage_table(reps: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    pa, na, po = (np.array(v, dtype=float) for v in zip(*CELLS))
    no = np.full_like(na, 300.0)
    k_a = rng.binomial(na.astype(int), pa, (reps, len(CELLS))).astype(float)
    k_o = rng.binomial(no.astype(int), po, (reps, len(CELLS))).astype(float)
    n_a, n_ref, k_ref = np.broadcast_to(na, k_a.shape), np.broadcast_to(na + no, k_a.shape), k_a + k_o
    truth = no / (na + no) * (pa - po)
    d = 0.05 / (2 * len(CELLS))
    d_hat = k_a / n_a - k_ref / n_ref
    oracle = np.quantile(truth - d_hat, 1 - d, axis=0)
    cache: dict[tuple[int, int, str], float] = {}

    def end(k: int, n: int, side: str) -> float:
        if (k, n, side) not in cache:
            ci = binomtest(k, n).proportion_ci(confidence_level=1 - d, method="exact")
            cache[(k, n, side)] = ci.high if side == "up" else ci.low
        return cache[(k, n, side)]

    rect = np.empty(k_a.shape)
    for idx in np.ndindex(k_a.shape):
        ka, nn, kr, nr = (int(v[idx]) for v in (k_a, n_a, k_ref, n_ref))
        rect[idx] = (nr - nn) / nr * (end(ka, nn, "up") - end(kr - ka, nr - nn, "lo")) - d_hat[idx]
    rect_mean = rect.mean(axis=0)
    head = " | ".join(f"rate {p} (n={int(n)}) vs {q}" for p, n, q in CELLS)
    out = [f"Joint coverage over {reps} repetitions at delta = 0.05 (m = {2 * len(CELLS)} one-sided rows), and mean "
           "margin of the + side / exact binomial (rectangle) margin; / oracle quantile in brackets.", "",
           f"| bound | joint coverage | {head} |", "|---|---|" + "---|" * len(CELLS)]
    for b in BOUNDS:
        lo, up = anchored_bounds(b, k_a, n_a, k_ref, n_ref, d)
        cov = np.all((lo <= truth + 1e-12) & (truth <= up + 1e-12), axis=1).mean()
        m = (up - d_hat).mean(axis=0)
        cells = " | ".join(f"{m[i] / rect_mean[i]:.2f} ({m[i] / oracle[i]:.2f})" for i in range(len(CELLS)))
        out.append(f"| {b} | {cov:.3f} | {cells} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    args = ap.parse_args()
    lines = ["# Certificate margins (bench/certify_margins.py)", "", "## Role certificate, delta = 0.05", "",
             *margins_table(), "", "## Anchored cells: coverage and tightness", "", *coverage_table(args.reps)]
    text = "\n".join(lines) + "\n"
    print(text)
    results = Path(os.environ.get("FARO_BENCH_RESULTS") or ROOT / "bench" / "results")  # python -m bench sets it
    results.mkdir(exist_ok=True)
    (results / "certify_margins.md").write_text(text)


BENCH = Benchmark("certify_margins", "study", "margins and coverage of the certificate's bounds",
                  run=main, quick=("--reps", "20"), json="")

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
