"""Assemble bench/results/PERFORMANCE.md (the "Performance" section of docs/RESULTS.md) from the benchmark outputs.

    python bench/performance.py

Reads bench/results/{overhead,vs_trl,vs_fairlearn,sweep_engine,sweep_prefix,cache,scaling}.{md,json} as the scripts wrote them (run
each first; missing ones are listed as not run) and writes a summary of every figure against its goal,
followed by each script's table verbatim.
"""

from __future__ import annotations

import json
from typing import Any

from _common import RESULTS, md_table

GOALS: list[tuple[str, str, str, str, Any]] = [
    # (script, figure, what, goal text, test): the goals of the speed issue (#24); None: reported, no goal
    ("overhead", "ratio_full", "Faro-DP(role) step / BT step, full mode (MiniLM, batch 32), per step", "≤ 1.03",
     lambda v: v <= 1.03),
    ("overhead", "ratio_full_per_token", "the same per real token (whole-item batches hold fewer tokens)", "≤ 1.03",
     lambda v: v <= 1.03),
    ("overhead", "ratio_head", "Faro-DP(role) step / BT step, head mode (dual step every 20 steps amortized)",
     "reported", None),
    ("overhead", "ratio_head_primal", "the same, primal step only", "reported", None),
    ("vs_trl", "throughput_ratio_dp", "Faro full-mode DP(role) pairs/s ÷ TRL RewardTrainer (constraint binds)",
     "≥ 1.25", lambda v: v >= 1.25),
    ("vs_trl", "throughput_ratio", "the same without a constraint", "≥ 1.25", lambda v: v >= 1.25),
    ("vs_trl_cuda", "throughput_ratio", "the same on a GPU (H100, as logged in vs_trl_cuda_runs.md; no constraint)",
     "≥ 1.25", lambda v: v >= 1.25),
    ("vs_trl_cuda", "throughput_ratio_dp", "the same on a GPU (H100, DP)", "≥ 1.25", lambda v: v >= 1.25),
    ("vs_fairlearn", "time_ratio", "Faro head sweep (3 × 10 ε, batched) ÷ fairlearn ExponentiatedGradient (10 ε), "
     "both fitting the same MLP head, full length", "≤ 0.1", lambda v: v <= 0.1),
    ("vs_fairlearn", "time_ratio_last_iterate", "the same, Faro selecting the last iterate as fairlearn does",
     "reported", None),
    ("vs_fairlearn", "faro_front_dominated", "Faro's EO front dominated by fairlearn's (either side)", "reported",
     None),
    ("vs_fairlearn", "faro_front_dominated_last_iterate", "the same, Faro returning its last iterate as "
     "fairlearn's heads do (select=\"last\")", "reported", None),
    ("sweep_engine", "ratio_30_vs_one", "30-member batched sweep (3 kinds × 10 ε) ÷ one BT run, BBQ Religion, "
     "role, 2 epochs (`--quick`)", "≤ 6", lambda v: v <= 6),
    ("sweep_engine_full", "efficiency", "the batched sweep's arithmetic floor ÷ its wall time, 10 epochs",
     "≥ 0.7", lambda v: v >= 0.7),
    ("sweep_engine_full", "ratio_30_vs_one", "30-member batched sweep ÷ one BT run, 10 epochs", "reported", None),
    ("cache", "speedup_all_vs_1", "feature encoding, all cores ÷ one thread (texts/s)", "≥ 1.7",
     lambda v: v >= 1.7),
    ("cache", "ratio", "feature extraction, second run ÷ first run", "≤ 0.02", lambda v: v <= 0.02),
]
ORDER = ["overhead", "vs_trl", "vs_trl_cuda", "vs_fairlearn", "sweep_engine", "sweep_engine_full", "sweep_prefix",
         "cache", "scaling"]
NOTES = """What the numbers say (the history of each choice is in docs/TRAINING.md and docs/ARCHITECTURE.md):

- **A full-mode step costs what a BT step costs.** Under a role constraint the Bradley–Terry batch is drawn by
  whole items and the role terms are read off the forward the step already runs, so a DP(role) step is
  {ratio_full:.3f}x a BT step ({ratio_full_tok:.3f}x per real token: whole-item batches hold
  {tok:.2f}x BT's tokens). Head mode: {ratio_head:.2f}x ({ratio_head_primal:.2f}x for the primal step alone);
  there the step is a few milliseconds, so the penalty's gathers and the dual pass every 20 steps are a
  visible share.
- **Against TRL:** {trl_dp:.2f}x TRL RewardTrainer's pairs/s with DP(role) binding (largest multiplier
  {trl_lam:.4f}), {trl:.2f}x without a constraint, on CPU. Faro does less host and padding work
  (length-sorted micro-batches of ≤ 1,024 tokens; TRL pads every batch to its longest pair).
- **Sweeps are bound by per-run costs, not arithmetic.** `faro sweep` trains a head-mode grid as one batch
  (`faro_core/train/batched.py`: one thread per core, members on one path until a multiplier leaves 0, each
  member bit for bit its solo run). With `--quick` (2 epochs) a 30-member sweep is {engine_ratio:.2f}x one BT
  run; its arithmetic floor is {engine_floor:.2f} s of {engine_batched:.2f} s (efficiency {engine_eff:.3f}):
  the rest is what each member must still do on its own — score and measure its selected weights, write
  its scores, model, metrics and status. At 10 epochs the floor is {full_floor:.2f} s of
  {full_batched:.2f} s (efficiency {full_eff:.3f}; {full_ratio:.2f}x one BT run).
- **Against fairlearn:** the batched Faro sweep (30 runs) takes {fl_ratio:.3f}x the time of fairlearn's
  `ExponentiatedGradient` fitting the same MLP head for 10 ε ({fl_ratio_last:.3f}x with the last iterate).
  Faro's EO front is {dom} by fairlearn's under Faro's default selection and {last_dom} with the last
  iterate (seed check, test split, gold accuracy / EO violation: {seed_line}).
- **Encoding** runs on every core: {enc:.2f}x one thread's texts/s (this machine's matmul scaling
  {matmul:.2f}; the two cores are {smt}SMT siblings); all of BBQ takes about {bbq_min:.0f} min to encode here.
"""


# Figures measured with a flaw found later; shown, but not counted as met until a rerun.
UNVERIFIED: dict[str, str] = {}  # e.g. the first H200 vs-TRL figures, stamped on arrival (since rerun)


def notes(figs: dict[str, dict[str, Any]]) -> str:
    """NOTES with the figures filled in from the scripts' JSON (NaN where a script has not been run)."""
    def get(script: str, key: str) -> float:
        v = figs.get(script, {}).get(key)
        return float("nan") if v is None else float(v)

    check = figs.get("vs_fairlearn", {}).get("seed_check") or {}
    seed_line = "; ".join(f"{m} {v['gold_accuracy']:.3f} / {v['violation_eo']:.3f}" for m, v in check.items()) or "not run"
    def flag(script: str, key: str) -> str:
        v = figs.get(script, {}).get(key)
        return {True: "**dominated**", False: "**not dominated**"}.get(v, "not measured")

    smt = figs.get("cache", {}).get("smt_siblings")
    return NOTES.format(
        ratio_full=get("overhead", "ratio_full"), ratio_full_tok=get("overhead", "ratio_full_per_token"),
        tok=get("overhead", "tokens_full_faro_over_bt"), ratio_head=get("overhead", "ratio_head"),
        ratio_head_primal=get("overhead", "ratio_head_primal"), trl=get("vs_trl", "throughput_ratio"),
        trl_dp=get("vs_trl", "throughput_ratio_dp"), trl_lam=get("vs_trl", "dp_lambda_max"),
        engine_ratio=get("sweep_engine", "ratio_30_vs_one"), engine_floor=get("sweep_engine", "floor_s"),
        engine_batched=get("sweep_engine", "batched_s"), engine_eff=get("sweep_engine", "efficiency"),
        full_floor=get("sweep_engine_full", "floor_s"), full_batched=get("sweep_engine_full", "batched_s"),
        full_eff=get("sweep_engine_full", "efficiency"), full_ratio=get("sweep_engine_full", "ratio_30_vs_one"),
        fl_ratio=get("vs_fairlearn", "time_ratio"), fl_ratio_last=get("vs_fairlearn", "time_ratio_last_iterate"),
        dom=flag("vs_fairlearn", "faro_front_dominated"),
        last_dom=flag("vs_fairlearn", "faro_front_dominated_last_iterate"), seed_line=seed_line,
        enc=get("cache", "speedup_all_vs_1"), matmul=get("cache", "matmul_scaling"),
        smt="" if smt else "not " if smt is False else "(not measured) ", bbq_min=get("cache", "bbq_encode_min"))


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
        if script in UNVERIFIED and v is not None:
            rows.append([what, f"{v:.3g}", goal, "**unverified**: " + UNVERIFIED[script], "`bench/vs_trl.py --device cuda`"])
            continue
        shown = "not run" if v is None else (str(v).lower() if isinstance(v, bool) else f"{v:.3g}")
        verdict = "–" if v is None or ok is None else ("met" if ok(v) else "**not met**")
        rows.append([what, shown, goal, verdict,
                     "`bench/vs_trl.py --device cuda`" if script == "vs_trl_cuda" else
                     "`python -m bench run sweep_engine` (full length)" if script == "sweep_engine_full" else
                     "`python -m bench run sweep_engine --quick`" if script == "sweep_engine" else
                     f"`python -m bench run {script}`"])
    parts = ["## Performance", "",
             "Measured on a 2-core CPU machine shared with other jobs. Every comparison runs its sides "
             "interleaved in one process (A B, then B A, ...), so load hits both alike; figures are medians with "
             "their interquartile range, ratios are medians of per-round ratios of one run (except vs_fairlearn's "
             "headline, total sweep time over total time, as its goal is stated; its per-ε median is beside it). "
             "Each script prints its table, "
             "writes it to `bench/results/<name>.md`, prints its figures as one JSON line with `--json`, and has "
             "a `--quick` mode.", "",
             md_table(["figure", "value", "goal", "", "script"], rows), "", notes(figs)]
    for name in ORDER:
        p = RESULTS / f"{name}.md"
        if p.exists():
            parts += [p.read_text().strip().replace("\n## ", "\n### ").replace("## ", "### ", 1), ""]
    (RESULTS / "PERFORMANCE.md").write_text("\n".join(parts))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
