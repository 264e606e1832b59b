"""Acceptance figures of the role study (``bench/study_bbq.py --attribute role --redraw-data``) from its store.

    python bench/study_role_summary.py RUNS_DIR

Per model family: the test split's v_DP(role) per seed and its seed mean with a 95% t-interval, P(r_biased >
r_counter), gold accuracy, v_EO(role), and the Clopper-Pearson bounds of DP(role) alone (delta = 0.05, each
side at delta/2, from each run's ``certificates_by_kind.json``): how many seeds are certified at or below 0.05
and 0.1 (upper bound <= eps) and how many are certifiably above them (lower bound > eps). Prints a Markdown
table; reads only the runs' files.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from faro_core.train.method_spec import REFERENCE, SPECS, display_label, is_primary, is_reference  # noqa: E402


def family(config: dict) -> str:
    if is_reference(config):
        return SPECS[REFERENCE].label
    if not is_primary(config):
        return config["method"]
    return f"{display_label({**config, 'constraints': config['constraints'][:1]})} eps={config['epsilon']:g}"


def run_row(path: Path) -> dict:
    metrics = json.loads((path / "metrics.json").read_text())
    by_kind = json.loads((path / "certificates_by_kind.json").read_text())
    test = metrics["test"]
    role = test["role"]
    return {"seed": json.loads((path / "config.json").read_text())["seed"], "gold": test["gold_accuracy"],
            "v_dp": role["dp"], "P": role["p_biased_over_counter"], "v_eo": role["eo"],
            "dp_up": by_kind["dp"]["by_kind"]["dp"]["max_upper"], "dp_lo": by_kind["dp"]["by_kind"]["dp"]["max_lower"],
            "eo_up": by_kind["eo"]["by_kind"]["eo"]["max_upper"], "eo_lo": by_kind["eo"]["by_kind"]["eo"]["max_lower"]}


def mean_ci(x: list[float]) -> str:
    a = np.asarray(x, float)
    if len(a) < 2:
        return f"{a.mean():.3f}"
    return f"{a.mean():.3f} ± {stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)):.3f}"


def per_seed(rows: list[dict], key: str) -> str:
    return ", ".join(f"{r[key]:.3f}" for r in rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0] if argv else "runs/study_bbq")
    fams: dict[str, list[dict]] = {}
    for path in sorted(root.iterdir()):
        if (path / "certificates_by_kind.json").exists():
            fams.setdefault(family(json.loads((path / "config.json").read_text())), []).append(run_row(path))
    print("| model | seeds | test v_DP(role) | per seed | P(b>c) | gold acc | v_EO(role) | DP upper per seed | "
          "DP lower per seed | cert ≤ 0.05 | cert ≤ 0.1 | above 0.05 | above 0.1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in sorted(fams, key=lambda f: (f != "BT", f)):
        rows = sorted(fams[name], key=lambda r: r["seed"])
        n = len(rows)
        print(f"| {name} | {n} | {mean_ci([r['v_dp'] for r in rows])} | {per_seed(rows, 'v_dp')} | "
              f"{np.mean([r['P'] for r in rows]):.3f} | {mean_ci([r['gold'] for r in rows])} | "
              f"{mean_ci([r['v_eo'] for r in rows])} | {per_seed(rows, 'dp_up')} | {per_seed(rows, 'dp_lo')} | "
              f"{sum(r['dp_up'] <= 0.05 for r in rows)}/{n} | {sum(r['dp_up'] <= 0.1 for r in rows)}/{n} | "
              f"{sum(r['dp_lo'] > 0.05 for r in rows)}/{n} | {sum(r['dp_lo'] > 0.1 for r in rows)}/{n} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
