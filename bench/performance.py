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
    # (script, figure, what, goal text, test)
    ("overhead", "ratio_head", "Faro step / BT step, head mode (default; dual step every 20 steps amortized)",
     "≤ 1.03", lambda v: v <= 1.03),
    ("overhead", "ratio_head_primal", "Faro step / BT step, head mode, primal step only (dual steps left out)",
     "≤ 1.03", lambda v: v <= 1.03),
    ("overhead", "ratio_full", "Faro step / BT step, full mode (MiniLM, batch 32)", "≤ 1.03", lambda v: v <= 1.03),
    ("vs_trl", "throughput_ratio", "Faro full-mode pairs/s ÷ TRL RewardTrainer (no constraint)", "≥ 1.25",
     lambda v: v >= 1.25),
    ("vs_trl", "throughput_ratio_dp", "Faro full-mode pairs/s ÷ TRL RewardTrainer (DP)", "≥ 1.25",
     lambda v: v >= 1.25),
    ("vs_trl_cuda", "throughput_ratio", "the same on a GPU (H100, as logged in vs_trl_cuda_runs.md; no constraint)",
     "≥ 1.25", lambda v: v >= 1.25),
    ("vs_trl_cuda", "throughput_ratio_dp", "the same on a GPU (H100, DP)", "≥ 1.25", lambda v: v >= 1.25),
    ("vs_fairlearn", "time_ratio", "Faro head sweep (3 × 10 ε, batched) ÷ fairlearn ExponentiatedGradient (10 ε), "
     "both fitting the same MLP head", "≤ 0.05", lambda v: v <= 0.05),
    ("vs_fairlearn", "time_ratio_last_iterate", "the same, Faro selecting the last iterate as fairlearn does",
     "≤ 0.05", lambda v: v <= 0.05),
    ("vs_fairlearn", "time_ratio_linear", "the same, fairlearn fitting logistic regression (a weaker model)",
     "≤ 0.05", lambda v: v <= 0.05),
    ("sweep_engine", "ratio_30_vs_one", "30-member batched sweep (3 kinds × 10 ε) ÷ one BT run, BBQ Religion",
     "≤ 3", lambda v: v <= 3),
    ("vs_fairlearn", "faro_front_dominated", "Faro's EO front dominated by fairlearn's (either side)", "false",
     lambda v: v is False),
    ("vs_fairlearn", "faro_front_dominated_last_iterate", "the same, Faro returning its last iterate as "
     "fairlearn's heads do (select=\"last\")", "false", lambda v: v is False),
    ("cache", "ratio", "feature extraction, second run ÷ first run", "≤ 0.02", lambda v: v <= 0.02),
]
ORDER = ["overhead", "vs_trl", "vs_trl_cuda", "vs_fairlearn", "sweep_engine", "sweep_prefix", "cache", "scaling"]
NOTES = """What the numbers say, and what changed in `faro_core` to get them:

- **Head mode: the constraint costs a few element-wise ops per step; the dual step is the rest.** With the
  training split's cell counts fixed, the Lagrangian is linear in one smooth term per pair, so the
  multipliers are folded into per-pair coefficients after each dual step and a primal step adds a gather, a
  sigmoid and a dot product on the batch it already scored (`faro_core/constraints.py`,
  `ProxyGDA.penalty`). That replaced a separate 1,024-pair constraint batch with per-cell scatters: the
  primal step went from 5.9x (1.95x without the constraint batch) to {ratio_head_primal:.2f}x a ~2 ms BT step. The dual
  step needs the whole training split's statistics: a no-grad pass every 20 steps (each distinct response
  scored once: a quarter of BBQ's rows repeat), amortized {ratio_head:.2f}x on one BBQ
  category and O(dataset) (see Scaling). Reading them from a buffer of last-seen rewards instead (O(batch),
  no pass) made the multipliers overshoot on BBQ (docs/TRAINING.md), so the goal of 1.03 is **not met** in
  head mode; in full mode the backbone dominates and Faro costs what BT costs ({ratio_full:.2f}). Fused Adam
  (`make_adam`) made both sides' steps ~15% faster (a head BT step 2.12 → 1.81 ms in isolation), so Faro's
  fixed extra work per step is a larger share of it than before (1.28 → 1.31 amortized): faster in absolute
  terms, worse as a ratio. The extra ~0.27 ms of a primal step is dispatch, not arithmetic: moving the
  penalty's arithmetic to NumPy in its autograd node made it slower (270 vs 233 µs with a BT loss, measured).
- **Full mode is faster than TRL because it does less host and padding work.** On CPU: length-sorted
  micro-batches of at most 1,024 padded tokens (`bucketed_rewards`) give the same rewards as one batch padded
  to its longest pair (~52% padding on BBQ): {trl:.2f}x TRL, {trl_dp:.2f}x with DP. On a GPU a MiniLM step is
  host-bound (~20-30 ms of Python and kernel launches for a few ms of GPU work), and Faro's loop does less of
  that host work than TRL's `Trainer`: losses are read back every 10 steps, batches are padded with numpy
  (`pad_encodings`, 0.13 ms, instead of the tokenizer's `pad`, 1.0 ms; before these two: 0.90-1.11x on an
  H200). On an H100, Age, 4,800 pairs, 8 rounds: {trl_cuda:.2f}x TRL, {trl_cuda_dp:.2f}x with DP. The goal is
  **borderline on a GPU**: five runs on H100s gave 1.04-1.43 (median 1.25) without a constraint and 1.17-1.34
  (median 1.29) with DP, mostly because TRL's own throughput moved between 920 and 1,210 pairs/s from call to
  call (bench/results/vs_trl_cuda_runs.md). Pinned asynchronous copies (`to_device`), a sync-free penalty on a
  GPU and fused Adam went in too; they did not change Faro's throughput at this size (the GPU is idle when a
  copy waits for it) and matter when the GPU is the bottleneck.
- **A Faro sweep, batched, is {fl_ratio:.3f}x the time of fairlearn's reduction on the same model class, not
  0.05x** ({fl_ratio_serial:.3f}x one run after another in the same measurement). `faro sweep` now trains a
  head-mode grid as one batch (`faro_core/train/batched.py`: one process, one gather and one stacked forward
  and backward per step, each member bit for bit its solo run); on a CPU that saves the per-run fixed costs,
  not the arithmetic, since every member's products are its own (`bench/sweep_engine.py`: a 30-member sweep is
  {engine_ratio:.1f}x one BT run; docs/TRAINING.md, "Batched sweeps"). Before the engine:
  `ExponentiatedGradient` fitting the same MLP head each round (`expgrad_head`, `PairHeadClassifier`: Faro's
  optimizer, batch, learning rate and epochs) takes {fl_fit:.1f} s per ε, about {fl_fits:.0f} head fits; a Faro run
  takes {faro_run:.2f} s, {faro_fits:.1f} head fits' worth (the steps, ~25% validation and dual passes, and the
  run's files). The goal needs {goal_ms:.0f} ms per Faro run, which is {goal_fits:.2f} plain BT fits of the
  same head with no constraint, validation or files ({bt_fit:.2f} s each, measured in the same run), while
  a Faro step alone costs {ratio_head_primal:.2f}x a BT step: the goal asks a constrained, validated, saved
  run to cost what one bare unconstrained fit costs. Training the 30 runs as one stacked model
  does not get there on a CPU: a stacked step of 30 heads cost 1.67 ms per head against 1.72 ms for one head
  alone (measured), because the step is already bound by its matrix products (0.32 ms per forward product).
  What went in: fused Adam (head step 2.12 → 1.81 ms) and one gather per batch. Against fairlearn fitting
  logistic regression on feature differences (`expgrad`, the previous comparison) the ratio is
  {fl_ratio_lin:.2f}: a logistic regression fit is cheap, and its models reach ~0.63 gold accuracy against
  ~0.82. **The fronts:** in this set-up (EO, no strata, 10 epochs) Faro-EO stays close to BT, and fairlearn
  with the MLP head is ahead on both axes on the seed check (training seeds 1–3, test split, seed means,
  gold accuracy / EO violation): {seed_line}. The gap is selection, not the fairness method: Faro returns
  the iterate most accurate on validation, which over 10 epochs is an earlier one, and fairlearn's heads are
  last iterates; BT's own last iterate is level with fairlearn's mixture in accuracy and lower in EO. With the
  same selection as fairlearn's (Faro-EO returning its last iterate, `select="last"`, in the same run) Faro's
  front is {last_dom}. Two rules that keep later iterates were measured and not made the default, because
  both help here and hurt the skewed 50-epoch BBQ runs, where observed-label validation accuracy is what
  tracked gold accuracy (`IterateSelector`): the latest iterate within one standard error of the best, and
  ranking by validation BT loss (`select_metric="loss"`, kept as an option: BT test gold accuracy here
  0.820 → 0.829, on skewed BBQ 0.828 → 0.812). Sharing training between the runs of an ε sweep was
  estimated too: a run is bit-identical to the λ = 0 trajectory until its first dual step with a violation
  above its ε (tested), and in this sweep {prefix_frac:.0%} of the steps lie on that shared prefix; counting the three λ = 0
  trajectories and each run's fixed costs that is at most {prefix_saving:.0%} off the sweep, not the
  {goal_cut:.0%} the goal needs (`bench/sweep_prefix.py`), so it was not built.
- **Constraint cost vs size.** The primal step's constraint cost is O(batch) and does not grow with the number
  of groups (2-64): coefficients are gathered per pair, not scattered per cell. The dual step is O(dataset)
  per call (a pass over the split, or scatters over the buffer), amortized over `dual_every` steps.
"""


# Figures measured with a flaw found later; shown, but not counted as met until a rerun.
UNVERIFIED: dict[str, str] = {}  # e.g. the first H200 vs-TRL figures, stamped on arrival (since rerun)


def notes(figs: dict[str, dict[str, Any]]) -> str:
    """NOTES with the figures filled in from the scripts' JSON (NaN where a script has not been run)."""
    def get(script: str, key: str) -> float:
        v = figs.get(script, {}).get(key)
        return float("nan") if v is None else float(v)

    fl_fit = get("vs_fairlearn", "fairlearn_s_per_fit")
    check = figs.get("vs_fairlearn", {}).get("seed_check") or {}
    seed_line = "; ".join(f"{m} {v['gold_accuracy']:.3f} / {v['violation_eo']:.3f}" for m, v in check.items()) or "not run"
    return NOTES.format(ratio_head=get("overhead", "ratio_head"), ratio_head_primal=get("overhead", "ratio_head_primal"),
                        ratio_full=get("overhead", "ratio_full"), trl=get("vs_trl", "throughput_ratio"),
                        trl_dp=get("vs_trl", "throughput_ratio_dp"), trl_cuda=get("vs_trl_cuda", "throughput_ratio"),
                        trl_cuda_dp=get("vs_trl_cuda", "throughput_ratio_dp"),
                        fl_ratio=get("vs_fairlearn", "time_ratio"), faro_run=get("vs_fairlearn", "faro_s_per_run"),
                        fl_ratio_serial=get("vs_fairlearn", "time_ratio_serial"),
                        engine_ratio=get("sweep_engine", "ratio_30_vs_one"),
                        fl_ratio_lin=get("vs_fairlearn", "time_ratio_linear"), seed_line=seed_line,
                        prefix_saving=get("sweep_prefix", "estimated_saving"),
                        prefix_frac=get("sweep_prefix", "shared_step_fraction"),
                        goal_cut=1 - 0.05 / get("vs_fairlearn", "time_ratio_serial"),
                        last_dom={True: "**dominated**", False: "**not dominated**"}.get(
                            figs.get("vs_fairlearn", {}).get("faro_front_dominated_last_iterate"), "not measured"),
                        fl_fit=fl_fit, goal_ms=fl_fit * 10 / 30 * 0.05 * 1000,
                        bt_fit=get("vs_fairlearn", "bt_head_fit_s"),
                        fl_fits=fl_fit / get("vs_fairlearn", "bt_head_fit_s"),
                        faro_fits=get("vs_fairlearn", "faro_s_per_run") / get("vs_fairlearn", "bt_head_fit_s"),
                        goal_fits=fl_fit * 10 / 30 * 0.05 / get("vs_fairlearn", "bt_head_fit_s"))


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
        rows.append([what, shown, goal, "–" if v is None else ("met" if ok(v) else "**not met**"),
                     "`bench/vs_trl.py --device cuda`" if script == "vs_trl_cuda" else f"`bench/{script}.py`"])
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
