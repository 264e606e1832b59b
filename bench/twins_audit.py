"""WinoBias (or any twin table) counterfactual audit of trained runs: one table row per run and subset.

Runs `faro audit RUN --twins PATH` for each run (cached in the run's audit.json) and prints the mean |dz|
between twins and the share of twins where the reward prefers the stereotype-consistent text (0.5 is
unbiased), with their bootstrap 95% intervals, overall and by subset (WinoBias type 1 / type 2).

Usage: python bench/twins_audit.py --runs-dir DIR --run RUN [--run RUN ...] [--twins ../shared/data/winobias]
       [--md FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faro_core.evaluate.audits import audit_run  # noqa: E402
from faro_core.evaluate.twin_audit import twin_audit_table  # noqa: E402
from faro_core.store.runs import RunStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", required=True)
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--twins", default=str(ROOT.parent / "shared/data/winobias"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--md", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not Path(args.twins).exists():
        print(f"twins {args.twins} not found")
        return 2
    store = RunStore(args.runs_dir)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text)
        lines.append(text)

    out = {}
    say(f"Twin audit on {args.twins} (seed {args.seed}); |dz| in sd units of each run's rewards on the twins\n")
    say("| run | method | trained on | subset | twins | mean abs dz [95% CI] | prefers stereotype-consistent [95% CI] |")
    say("|---|---|---|---|---|---|---|")
    for rid in args.run:
        run = store.get(rid)
        cfg = run.read("config.json", {}) or {}
        t0 = time.perf_counter()
        res = audit_run(run, twins=args.twins, seed=args.seed)["twins"]
        out[rid] = {**res, "wall_seconds": round(time.perf_counter() - t0, 1)}
        method = cfg.get("method", "?") + ("-" + ",".join(cfg["constraints"]) if cfg.get("constraints") else "")
        data = f"{Path(str(cfg.get('data', '?'))).name}, skew {cfg.get('skew', 0)}"
        for r in twin_audit_table(res).itertuples():
            pref = (f"{r.stereo_preference:.3f} [{r.pref_lo:.3f}, {r.pref_hi:.3f}]"
                    if r.stereo_preference is not None else "n/a")
            say(f"| {rid} | {method} | {data} | {r.subset} | {r.n} | {r.mean_abs_dz:.3f} [{r.dz_lo:.3f}, "
                f"{r.dz_hi:.3f}] | {pref} |")
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
