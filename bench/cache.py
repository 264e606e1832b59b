"""Feature cache and encoding speed: a second run's extraction time over the first's (goal <= 0.02), and the
encoder's texts/s on one thread and on every core (goal: all cores >= 1.7x one thread, or this machine's
matmul scaling if lower).

    python bench/cache.py [--quick] [--rounds N] [--texts N] [--json]

Each round gets a fresh, empty cache directory (``FARO_CACHE_DIR`` semantics: a temporary ``root``), and the
features shipped with the demo data are switched off (``FARO_NO_SHIPPED_CACHE=1``): they hold some of the
benchmark's texts, so a "first run" would read rather than encode them. The first run encodes the (prompt,
response) texts of BBQ pairs with the embedded MiniLM (head mode, max length 256) on every core and writes
safetensors shards; the second run is a new :class:`~faro_core.models.features.FeatureCache` on the same
directory (reads the shards, hashes the texts) asked for the same texts. Both times include building the cache
object and ``encode``; the encoder weights are loaded once beforehand, so model loading (which a first run in
a fresh process also pays) does not flatter the ratio. The thread comparison encodes the same texts with one
thread and with ``os.cpu_count()`` threads, interleaved (round r rotates the order). Reports whether the
cores are SMT siblings (``/sys/devices/system/cpu/cpu*/topology/thread_siblings_list``), a 1024 x 1024 float32
matmul's scaling over the same thread counts, and the time to encode the shared BBQ's distinct texts,
extrapolated from the all-cores texts/s. Writes bench/results/cache.md; with --json the last stdout line is
the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    Benchmark,
    bbq_source,
    finish,
    fmt_spread,
    interleave,
    machine_line,
    md_table,
    paired_ratios,
    quartiles,
)

ALL_BBQ_TEXTS = 228_000  # texts of all of BBQ (every category, twins included), as issue #24 counts them


def frame_texts(df) -> tuple[list[str], list[str]]:
    """Every (prompt, response) text a head-mode run encodes for the frame (chosen, rejected, twins)."""
    tw = df["cf_chosen"].notna()
    prompts = list(df["prompt"]) * 2 + list(df.loc[tw, "cf_prompt"]) * 2
    responses = (list(df["chosen"]) + list(df["rejected"]) + list(df.loc[tw, "cf_chosen"])
                 + list(df.loc[tw, "cf_rejected"]))
    return prompts, responses


def texts(n: int) -> tuple[list[str], list[str], str]:
    """Prompts and responses of ``n`` distinct texts (chosen, rejected, twins) of the benchmark data."""
    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data

    data, fmt, label = bbq_source()
    _, df, _ = load_training_data(FaroConfig(data=data, format=fmt).resolved())
    prompts, responses = frame_texts(df)
    uniq = sorted(set(zip(prompts, responses)))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(uniq), size=min(n, len(uniq)), replace=False)
    return [uniq[i][0] for i in pick], [uniq[i][1] for i in pick], label


def all_bbq_texts() -> tuple[int | None, str]:
    """(distinct texts, label) of the shared BBQ folder (every category), None when it is absent."""
    from faro_core.paths import SHARED_DATA
    from faro_core.train import FaroConfig
    from faro_core.train.inputs import load_training_data

    folder = SHARED_DATA / "bbq"
    if not folder.is_dir():
        return None, "no shared BBQ folder"
    _, df, _ = load_training_data(FaroConfig(data=str(folder), format="bbq").resolved())
    prompts, responses = frame_texts(df)
    return len(set(zip(prompts, responses))), f"{len(df):,} pairs"


def smt_siblings() -> tuple[bool | None, str]:
    """(any core shares its physical core with another logical CPU?, the sibling lists as read)."""
    lists = []
    for p in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings_list")):
        lists.append(p.read_text().strip())
    if not lists:
        return None, "topology not readable"
    smt = any(("," in s or "-" in s) for s in lists)
    return smt, "; ".join(f"cpu{i}: {s}" for i, s in enumerate(lists))


def matmul_scaling(threads: int, rounds: int = 5) -> float:
    """Speed-up of a 1024 x 1024 float32 matmul (20 per call) from one thread to ``threads``."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)

    def run(n: int) -> float:
        torch.set_num_threads(n)
        t0 = time.perf_counter()
        for _ in range(20):
            a @ b
        return time.perf_counter() - t0

    times = {1: [], threads: []}
    run(1), run(threads)
    for r in range(rounds):
        for n in ((1, threads) if r % 2 == 0 else (threads, 1)):
            times[n].append(run(n))
    return quartiles(paired_ratios(times[1], times[threads]))[1]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    os.environ["FARO_NO_SHIPPED_CACHE"] = "1"  # encode for real: the demo's shipped features hold some texts
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
    cores = os.cpu_count() or 1
    load_start = os.getloadavg()[0]
    prompts, responses, label = texts(n)
    n = len(prompts)
    warm = FeatureCache(root=tempfile.mkdtemp(prefix="faro-bench-warm-"), progress=False)
    warm._ensure_model()  # weights loaded once, shared by every first run (not timed)

    def first_run(threads: int | None, keep: list[tuple[Path, np.ndarray]] | None = None) -> None:
        root = Path(tempfile.mkdtemp(prefix="faro-bench-cache-"))
        fc = FeatureCache(root=root, progress=False, threads=threads)
        fc._tok, fc._model = warm._tok, warm._model
        a = fc.encode(prompts, responses)
        assert fc.last_encoded == len(set(zip(prompts, responses))), (fc.last_encoded, n)
        if keep is not None:
            keep.append((root, a))
        else:
            shutil.rmtree(root, ignore_errors=True)

    torch.set_num_threads(1)  # the caller's count, as a head-mode trainer's; encoding raises it
    first: list[float] = []
    second: list[float] = []
    for _ in range(rounds):
        made: list[tuple[Path, np.ndarray]] = []
        t0 = time.perf_counter()
        first_run(cores, made)
        first.append(time.perf_counter() - t0)
        root, a = made[0]
        try:
            t0 = time.perf_counter()
            fc2 = FeatureCache(root=root, progress=False)
            b = fc2.encode(prompts, responses)
            second.append(time.perf_counter() - t0)
            assert fc2.last_encoded == 0 and fc2._model is None and np.array_equal(a, b)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    by_threads = interleave({"1": lambda: first_run(1), "all": lambda: first_run(cores)}, rounds=rounds, warmup=0)
    shutil.rmtree(warm.dir.parent.parent, ignore_errors=True)
    mm = matmul_scaling(cores)
    smt, siblings = smt_siblings()
    n_all, all_label = all_bbq_texts()
    ratios = paired_ratios(second, first)
    ratio = quartiles(ratios)[1]
    tps_1 = n / quartiles(by_threads["1"])[1]
    tps_all = n / quartiles(by_threads["all"])[1]
    speedup = quartiles(paired_ratios(by_threads["1"], by_threads["all"]))[1]
    goal = min(1.7, mm)
    rows = [["first run (encode on every core + write shards)", fmt_spread(first, 1.0, 2), f"{n / quartiles(first)[1]:.1f}"],
            ["second run (read shards)", fmt_spread(second, 1e3, 1) + " ms", f"{n / quartiles(second)[1]:.0f}"],
            ["**second / first**", f"**{fmt_spread(ratios, 1.0, 4)}**", "goal ≤ 0.02: "
             + ("**met**" if ratio <= 0.02 else "**not met**")]]
    trows = [["1 thread", fmt_spread(by_threads["1"], 1.0, 2), f"{tps_1:.1f}"],
             [f"{cores} threads (all cores)", fmt_spread(by_threads["all"], 1.0, 2), f"{tps_all:.1f}"],
             ["**all / one (texts/s)**", f"**{speedup:.2f}×**",
              f"goal ≥ {goal:.2f}× ({'1.7×' if goal == 1.7 else 'the matmul scaling, lower than 1.7×'}): "
              + ("**met**" if speedup >= goal - 1e-9 else "**not met**")]]
    all_line = (f"Encoding the shared BBQ ({all_label}, {n_all:,} distinct texts) on every core: about "
                f"**{n_all / tps_all / 60:.1f} min** (extrapolated from the all-cores texts/s, not measured); "
                f"one thread: about {n_all / tps_1 / 60:.1f} min." if n_all else all_line_missing())
    all_line += (f" All of BBQ (issue #24 counts about {ALL_BBQ_TEXTS:,} texts): about "
                 f"**{ALL_BBQ_TEXTS / tps_all / 60:.0f} min** on every core, {ALL_BBQ_TEXTS / tps_1 / 60:.0f} min on "
                 "one thread (extrapolated the same way).")
    body = (f"{n} distinct (prompt, response) texts of {label}, embedded all-MiniLM-L6-v2 (max length 256), "
            f"{rounds} rounds (fresh cache directory each, shipped features off), median [IQR]. "
            f"{machine_line(cores)}; 1-min load average {load_start:.2f} at the start.\n\n"
            + md_table(["run", "seconds", "texts / s"], rows)
            + "\n\nEncoder threads (first runs, interleaved):\n\n"
            + md_table(["threads", "seconds", "texts / s"], trows)
            + f"\n\nSMT siblings: **{'yes' if smt else 'no' if smt is not None else 'unknown'}** ({siblings}). "
            f"A 1024×1024 float32 matmul runs {mm:.2f}× faster on {cores} threads than on one.\n\n{all_line}"
            + "\n\nProduced by `python bench/cache.py" + (" --quick" if args.quick else "") + "`.")
    finish("cache", "Feature cache: second run vs first, and encoding threads", body,
           {"ratio": round(ratio, 5), "texts_per_s_1": round(tps_1, 2), "texts_per_s_all": round(tps_all, 2),
            "threads_all": cores, "speedup_all_vs_1": round(speedup, 3), "matmul_scaling": round(mm, 3),
            "smt_siblings": smt, "bbq_texts": n_all,
            "bbq_encode_min": round(n_all / tps_all / 60, 2) if n_all else None,
            "all_bbq_encode_min": round(ALL_BBQ_TEXTS / tps_all / 60, 1)}, args.json)
    return 0


def all_line_missing() -> str:
    return "The shared BBQ folder is absent: no extrapolation."


BENCH = Benchmark("cache", "speed", "feature cache reuse and encoding throughput", run=main)

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
