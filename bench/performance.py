"""Assemble bench/results/PERFORMANCE.md (the README's "Performance" section) from the benchmark outputs.

    python bench/performance.py

Reads bench/results/{overhead,vs_trl,vs_fairlearn,cache,scaling}.{md,json} as the scripts wrote them (run
each first; missing ones are listed as not run) and writes a summary of every figure against its goal,
followed by each script's table verbatim.
"""

from __future__ import annotations

import json
from typing import Any

from _common import RESULTS, md_table

GOALS: list[tuple[str, str, str, str, Any]] = [
    # (script, figure, what, goal text, test)
    ("overhead", "ratio_head", "Faro step / BT step, head mode, constraint batch 1024 (default)", "≤ 1.03",
     lambda v: v <= 1.03),
    ("overhead", "ratio_head_cbs0", "Faro step / BT step, head mode, constraint_batch_size=0", "≤ 1.03",
     lambda v: v <= 1.03),
    ("overhead", "ratio_full", "Faro step / BT step, full mode (MiniLM, batch 32)", "≤ 1.03", lambda v: v <= 1.03),
    ("vs_trl", "throughput_ratio", "Faro full-mode pairs/s ÷ TRL RewardTrainer (no constraint)", "≥ 1.25",
     lambda v: v >= 1.25),
    ("vs_trl", "throughput_ratio_dp", "Faro full-mode pairs/s ÷ TRL RewardTrainer (DP)", "≥ 1.25",
     lambda v: v >= 1.25),
    ("vs_fairlearn", "time_ratio", "Faro head sweep (3 × 10 ε) ÷ fairlearn ExponentiatedGradient (10 ε)", "≤ 0.1",
     lambda v: v <= 0.1),
    ("vs_fairlearn", "faro_front_dominated", "Faro's EO front dominated by fairlearn's", "false",
     lambda v: v is False),
    ("cache", "ratio", "feature extraction, second run ÷ first run", "≤ 0.02", lambda v: v <= 0.02),
]
ORDER = ["overhead", "vs_trl", "vs_fairlearn", "cache", "scaling"]


def main() -> int:
    """Write PERFORMANCE.md; returns the exit status."""
    figs: dict[str, dict[str, Any]] = {}
    for name in ORDER:
        p = RESULTS / f"{name}.json"
        if p.exists():
            figs[name] = json.loads(p.read_text())
    rows = []
    for script, key, what, goal, ok in GOALS:
        v = figs.get(script, {}).get(key)
        shown = "not run" if v is None else (str(v).lower() if isinstance(v, bool) else f"{v:.3g}")
        rows.append([what, shown, goal, "–" if v is None else ("met" if ok(v) else "**not met**"),
                     f"`bench/{script}.py`"])
    parts = ["## Performance", "",
             "Measured on a 2-core CPU machine shared with other jobs. Every comparison runs its sides "
             "interleaved in one process (A B, then B A, ...), so load hits both alike; figures are medians with "
             "their interquartile range, ratios are per-round ratios of one run. Each script prints its table, "
             "writes it to `bench/results/<name>.md`, prints its figures as one JSON line with `--json`, and has "
             "a `--quick` mode.", "",
             md_table(["figure", "value", "goal", "", "script"], rows), ""]
    for name in ORDER:
        p = RESULTS / f"{name}.md"
        if p.exists():
            parts += [p.read_text().strip().replace("\n## ", "\n### ").replace("## ", "### ", 1), ""]
    (RESULTS / "PERFORMANCE.md").write_text("\n".join(parts))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
