"""Are two demo stores the same results? Every run's ``metrics.json`` key for key, its selected step and the
rewards of every scored pair (max |Δr| over ``scores.parquet``), plus ``model.json`` and ``constraints.json``.

    python tools/compare_demo.py OLD_RUNS_DIR NEW_RUNS_DIR [--runs demo-bt-s0,...] [--json]

Default runs: every ``demo-*`` run of OLD. Exit status 0 when every compared run is equal (max |Δr| = 0),
1 otherwise; one table row per run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REWARDS = ("r_chosen", "r_rejected", "cf_r_chosen", "cf_r_rejected")


def max_dr(a: Path, b: Path) -> float:
    """Largest |reward difference| between two ``scores.parquet`` files (inf when their pairs or NaN patterns
    differ)."""
    sa, sb = pd.read_parquet(a), pd.read_parquet(b)
    if list(sa["pair_id"]) != list(sb["pair_id"]):
        return float("inf")
    out = 0.0
    for col in REWARDS:
        x, y = sa[col].to_numpy(), sb[col].to_numpy()
        if not np.array_equal(np.isnan(x), np.isnan(y)):
            return float("inf")
        ok = ~np.isnan(x)
        if ok.any():
            out = max(out, float(np.abs(x[ok] - y[ok]).max()))
    return out


def compare_run(old: Path, new: Path) -> dict[str, Any]:
    """One run's comparison: metrics equal, the keys that differ, selected steps, max |Δr|, other files."""
    mo, mn = (json.loads((p / "metrics.json").read_text()) for p in (old, new))
    diff = sorted(k for k in set(mo) | set(mn) if mo.get(k) != mn.get(k))
    files = {f: json.loads((old / f).read_text()) == json.loads((new / f).read_text())
             for f in ("model.json", "constraints.json") if (old / f).exists()}
    return {"metrics_equal": not diff, "differing_keys": diff, "selected_step_old": mo.get("selected_step"),
            "selected_step_new": mn.get("selected_step"), "max_dr": max_dr(old / "scores.parquet", new / "scores.parquet"),
            "files_equal": files}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--runs", default=None, help="comma-separated run ids (default: every demo-* run of OLD)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    old, new = Path(args.old), Path(args.new)
    runs = args.runs.split(",") if args.runs else sorted(p.name for p in old.glob("demo-*") if p.is_dir())
    if not runs:
        print(f"compare_demo: no demo-* runs in {old}", file=sys.stderr)
        return 2
    res = {r: compare_run(old / r, new / r) for r in runs}
    ok = all(v["metrics_equal"] and v["max_dr"] == 0.0 and all(v["files_equal"].values()) for v in res.values())
    print("| run | metrics.json equal | selected step old = new | max abs dr | model/constraints equal |")
    print("|---|---|---|---|---|")
    for r, v in res.items():
        print(f"| {r} | {v['metrics_equal']}{'' if v['metrics_equal'] else ' ' + str(v['differing_keys'])} | "
              f"{v['selected_step_old']} = {v['selected_step_new']} | {v['max_dr']:g} | "
              f"{all(v['files_equal'].values())} |")
    print("all equal" if ok else "DIFFERENT")
    if args.json:
        print(json.dumps({"equal": ok, "runs": res}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
