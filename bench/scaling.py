"""Scaling of a head-mode step: time and peak memory vs batch size, number of groups and dataset size.

    python bench/scaling.py [--quick] [--json]

Synthetic data (random unit-norm 384-d features standing in for cached MiniLM features; K response groups and
K pair groups, 4 strata, a third of responses naming no group, every pair with a twin), so every size is
affordable. Each point runs in a fresh process (peak RSS is per process) the trainer's own step
(:class:`faro_core.train.stepper.TrainStepper`, through bench/overhead.py's StepBench): plain BT and Faro with DP, EO and CF (epsilon 0.05), sides interleaved,
order flipped every round. Constraint cost = Faro step - BT step (median); per pair = that over the pairs the
constraint terms see. Peak memory: the process's peak RSS after BT steps and after the Faro steps.

Sweeps: batch size and number of groups K = 2..64 (the primal step: the linearized penalty on the BT batch,
dual steps left out), and dataset size (batch 128: the primal step alone, and with the dual step every 20
steps, on a fresh no-grad pass over the whole split, the head-mode default and O(dataset) per dual step, or
from the buffer of each pair's last-seen rewards).
Writes bench/results/scaling.md; with --json the last stdout line holds every point.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from typing import Any

from _common import ROOT, Benchmark, finish, machine_line, md_table, quartiles

STRATA = 4
DIM = 384
NEVER = 10**9  # dual_every that never comes: the primal step alone


def synth_frame(n: int, k: int, seed: int = 0) -> tuple[Any, Any]:
    """(frame, GroupIndex) of ``n`` synthetic pairs with ``k`` groups, all in the training split."""
    import numpy as np
    import pandas as pd

    from faro_core.fairness.pairs import GroupIndex

    rng = np.random.default_rng(seed)
    names = [f"g{i}" for i in range(k)]

    def groups(p_none: float) -> list[str | None]:
        codes = rng.integers(0, k, n)
        none = rng.random(n) < p_none
        return [None if z else names[c] for c, z in zip(codes, none)]

    df = pd.DataFrame({
        "pair_id": [f"p{i}" for i in range(n)], "chosen_group": groups(1 / 3), "rejected_group": groups(1 / 3),
        "group": [names[c] for c in rng.integers(0, k, n)],
        "stratum": [f"s{c}" for c in rng.integers(0, STRATA, n)], "gold": rng.integers(0, 2, n).astype(float),
        "prompt": "x", "cf_prompt": "x'", "cf_chosen": "c'", "cf_rejected": "r'", "split": "train",
    })
    index = GroupIndex(response_groups=names, pair_groups=names, strata=[f"s{i}" for i in range(STRATA)])
    return df, index


def synth_backend(n: int, seed: int = 0) -> Any:
    """A :class:`~faro_core.train.backends.HeadBackend` holding random features instead of encoded ones."""
    import torch

    from faro_core.models.reward import HeadRewardModel
    from faro_core.train.backends import HeadBackend

    g = torch.Generator().manual_seed(seed)

    def feats() -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(n, DIM, generator=g), dim=-1)

    x = [feats() for _ in range(4)]
    torch.manual_seed(seed)
    return HeadBackend.from_features(*x, torch.ones(n, dtype=torch.bool), HeadRewardModel(DIM, 256))


def run_point(p: dict[str, Any]) -> dict[str, Any]:
    """Time BT and Faro (DP, EO, CF) steps at one point; returns medians (ms) and peak RSS (MB)."""
    import copy

    import torch
    from overhead import StepBench

    from faro_core.train import FaroConfig
    from faro_core.train.method_spec import REFERENCE

    torch.set_num_threads(1)
    df, index = synth_frame(p["n"], p["k"])
    be = synth_backend(p["n"])
    base = {"mode": "head", "batch_size": p["batch"], "constraint_batch_size": p["cbs"], "epsilon": 0.05,
            "min_count": 1}
    if p.get("dual_every") is not None:
        base["dual_every"] = p["dual_every"]
    if p.get("dual_source"):
        base["dual_source"] = p["dual_source"]
    sides: dict[str, StepBench] = {}
    for kind in (REFERENCE, "dp", "eo", "cf"):  # BT: the primary method with no constraint
        cfg = FaroConfig.from_dict({**base, "constraints": [] if kind == REFERENCE else [kind]}).resolved()
        sides[kind] = StepBench(cfg, df, index, be, copy.deepcopy(be.model))
        sides[kind].steps_per_call = 20  # one dual step per call at dual_every = 20
    rss = {}
    for kind, s in sides.items():  # warm-up; peak RSS after each kind's first calls
        s()
        s()
        rss[kind] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times: dict[str, list[float]] = {k: [] for k in sides}
    import time

    order = list(sides)
    for r in range(p["rounds"]):
        shift = r % len(order)  # the order rotates, so no side always runs first
        for k in order[shift:] + order[:shift]:
            t0 = time.perf_counter()
            sides[k]()
            times[k].append((time.perf_counter() - t0) / sides[k].steps_per_call)
    # the constraint's cost per round (Faro - BT of the same round), so load that hits a round hits both
    extra = {k: [1e3 * (a - b) for a, b in zip(times[k], times["bt"])] for k in ("dp", "eo", "cf")}
    out = {**p, "ms": {k: quartiles(v)[1] * 1e3 for k, v in times.items()},
           "ms_iqr": {k: [quartiles(v)[0] * 1e3, quartiles(v)[2] * 1e3] for k, v in times.items()},
           "extra_ms": {k: quartiles(v)[1] for k, v in extra.items()},
           "extra_iqr": {k: [quartiles(v)[0], quartiles(v)[2]] for k, v in extra.items()},
           "rss_mb": rss, "constraint_pairs": p["cbs"] or p["batch"],
           "dual_every": getattr(sides["dp"].config, "dual_every", None),
           "dual_source": getattr(sides["dp"].config, "dual_source", None)}
    return out


def point(p: dict[str, Any]) -> dict[str, Any]:
    """Run one point in a fresh process (so its peak RSS is its own)."""
    res = subprocess.run([sys.executable, __file__, "--point", json.dumps(p)], capture_output=True, text=True,
                         cwd=ROOT / "bench", timeout=900)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(points: list[dict[str, Any]], key: str, label: str) -> str:
    """Markdown rows for one sweep: BT ms, constraint cost per kind (ms and µs per constraint pair), RSS."""
    rows = []
    for q in points:
        bt = q["ms"]["bt"]
        extra = q["extra_ms"]
        per = {k: 1e3 * v / q["constraint_pairs"] for k, v in extra.items()}
        first = q[key]
        if key == "n":
            if q["dual_every"] >= NEVER:
                first = f"{q['n']:,}, primal step only"
            elif q["dual_source"] == "buffer":
                first = f"{q['n']:,}, + dual step every {q['dual_every']} steps from the reward buffer"
            else:
                first = f"{q['n']:,}, + dual step every {q['dual_every']} steps on a fresh pass (default)"
        rows.append([first,
                     f"{bt:.2f}", *[f"{extra[k]:+.2f} [{q['extra_iqr'][k][0]:+.2f}, {q['extra_iqr'][k][1]:+.2f}] "
                                    f"({per[k]:+.2f})" for k in ("dp", "eo", "cf")],
                     f"{q['rss_mb']['bt']:.0f} / {max(q['rss_mb'].values()):.0f}"])
    return md_table([label, "BT ms/step", "DP extra ms [IQR] (µs/pair)", "EO extra ms [IQR] (µs/pair)",
                     "CF extra ms [IQR] (µs/pair)", "peak RSS MB (BT / Faro)"], rows)


def main(argv: list[str] | None = None) -> int:
    """Run the sweeps; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="under a minute: fewer points and rounds")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--point", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.point:
        print(json.dumps(run_point(json.loads(args.point))))
        return 0
    rounds = 2 if args.quick else 8
    batches = [128, 512] if args.quick else [128, 512, 2048, 8192]
    ks = [2, 64] if args.quick else [2, 4, 8, 16, 32, 64]
    ns = [2_000, 20_000] if args.quick else [2_000, 20_000, 200_000]
    n_base = 5_000 if args.quick else 20_000
    b_pts = [point({"n": max(n_base, b), "k": 8, "batch": b, "cbs": 0, "dual_every": NEVER, "rounds": rounds})
             for b in batches]
    k_pts = [point({"n": n_base, "k": k, "batch": 1024, "cbs": 0, "dual_every": NEVER, "rounds": rounds})
             for k in ks]
    n_pts = [point({"n": n, "k": 8, "batch": 128, "cbs": 0, "dual_every": de, "dual_source": src, "rounds": rounds})
             for n in ns for de, src in ((NEVER, None), (20, "exact"), (20, "buffer"))]
    body = (f"Head mode, synthetic data ({DIM}-d features, MLP head 256), 1 torch thread, {rounds} rounds of 20 steps "
            f"per side, the four sides' order rotated every round. Extra = median over rounds of (Faro step − BT step of the same round) at the same point (negative = noise); µs/pair = extra "
            f"over the pairs the constraint terms see. {machine_line(threads=1)} in each measuring process.\n\n"
            "**Batch size** (K = 8 groups × 4 strata; the primal step: linearized penalty on the BT batch, dual "
            "steps left out):\n\n" + table(b_pts, "batch", "batch")
            + "\n\n**Number of groups** (batch 1024, primal step; 2K one-sided DP constraints per stratum):\n\n" + table(k_pts, "k", "groups K")
            + "\n\n**Dataset size** (batch 128, K = 8; the primal step alone, then with the dual step amortized "
            "over 20 steps: on a fresh no-grad pass over the whole split, the head-mode default, which is "
            "O(dataset) per dual step, or from the buffer of last-seen rewards, O(dataset) scatters but no "
            "forward):\n\n" + table(n_pts, "n", "pairs")
            + "\n\nProduced by `python bench/scaling.py" + (" --quick" if args.quick else "") + "`.")
    figs = {"batch": b_pts, "groups": k_pts, "dataset": n_pts}
    finish("scaling", "Scaling: step time and memory", body, figs, args.json)
    return 0


BENCH = Benchmark("scaling", "speed", "a head-mode step's time and memory against batch, groups and data size",
                  run=main)

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
