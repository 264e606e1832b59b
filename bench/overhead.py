"""Overhead of Faro's constrained step over a plain Bradley-Terry step (goal <= 1.03).

    python bench/overhead.py [--quick] [--constraint dp] [--json]

Both sides run the trainer's own step (:class:`faro_core.train.stepper.TrainStepper`, the object the
training loop calls; same model init, optimizer, data and batch size; the Faro side draws its Bradley-Terry
batch by whole items, as a role run does, and its role terms read that batch's rewards): index draw, forward of
the batch, BT loss,
Faro's linearized penalty, backward, Adam step, Faro's dual step when due, and the per-step log row. Run-store
writes, which both sides share, are left out (that makes the ratio larger, not smaller).

Head mode: cached MiniLM features of BBQ pairs, MLP head (256 hidden), batch 128, 1 torch thread (the
trainer's setting); timed in calls of 20 steps, so each call holds one dual step (every 20 steps a no-grad
pass over the training split); and once with the dual steps left out, which isolates the per-step cost of the
constraint (O(batch)). Full mode: MiniLM fine-tuned, batch 32, max length 128, dual step every 5 steps from
the reward buffer, 1 thread (faster than 2 on these shared cores: see bench/vs_trl.py). Sides alternate
(A B, B A, ...).
The constraint is on the role attribute (BBQ's default, pinned), at epsilon 0 (at 0.05 its multipliers stayed
0 for the bench's 240 head-mode steps: a step that never binds); the bench reports the Faro side's largest
multiplier per mode and exits with status 1 when a side's constraint never binds (no cell, or multipliers
that stay 0), instead of timing a plain Bradley-Terry step twice.
Writes bench/results/overhead.md; with --json the last stdout line is
``{"ratio_head": ..., "ratio_head_primal": ..., "ratio_full": ..., "lambda_max_head": ..., "lambda_max_full": ...,
"ratio_full_per_token": ..., "tokens_full_faro_over_bt": ..., "attribute": "role"}``: the two full-mode sides'
batches differ (the Faro side's are whole items), so the full-mode ratio is also given per real token of the
batches each side timed.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from typing import Any

import torch
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

ATTRIBUTE = "role"  # BBQ's default attribute, pinned and stated
EPSILON = 0.0  # binds from the first dual step: at 0.05 DP(role) on Religion stayed 0 over 240 head steps


class StepBench:
    """One side of the comparison: the trainer's own :class:`~faro_core.train.stepper.TrainStepper` (model,
    optimizer, ProxyGDA state, step) plus the per-step log row; run-store writes are left out."""

    def __init__(self, config: Any, df: Any, index: Any, backend: Any, model: torch.nn.Module) -> None:
        from faro_core.fairness.pairs import PairTensors
        from faro_core.train.stepper import TrainStepper

        self.config = config
        self.stepper = TrainStepper(config, df, index, PairTensors.from_frame(df, index), backend, model)
        self.stepper.prepare()
        self.bs, self.cbs = self.stepper.bs_local, self.stepper.cbs
        self.dual_every = self.stepper.dual_every
        self.step = 0
        self.steps_per_call = 1
        self.lambda_max = 0.0  # the largest multiplier of any step so far
        self.tokens: list[int] = []  # full mode: the real (unpadded) tokens each call's batches hold

    def _batch_tokens(self, step: int) -> int:
        """Real tokens of step ``step``'s batch (chosen and rejected sequences; full mode; 0 in head mode)."""
        enc_c, enc_r = getattr(self.stepper.backend, "enc_c", None), getattr(self.stepper.backend, "enc_r", None)
        if enc_c is None or enc_r is None:
            return 0
        ids = self.stepper.draw(step)[0].tolist()
        return sum(len(enc_c[i]["input_ids"]) + len(enc_r[i]["input_ids"]) for i in ids)

    def __call__(self) -> None:
        """``steps_per_call`` training steps, exactly as the trainer's loop takes them (single process)."""
        self.tokens.append(sum(self._batch_tokens(self.step + k) for k in range(self.steps_per_call)))
        for _ in range(self.steps_per_call):
            row = self.stepper.finish_rows([self.stepper.log_row(self.stepper.step(self.step))])[0]
            self.lambda_max = max(self.lambda_max, row.get("lambda_max", 0.0))
            self.step += 1

    def binds(self) -> str | None:
        """None when the constraint has cells to constrain and a multiplier rose above 0; else why not."""
        cons = self.stepper.constraints.constraints
        idle = [c.kind for c in cons if c.cell_mask is not None and not bool(c.cell_mask.any())]
        if not cons or idle:
            return f"no cell to constrain ({idle or 'no constraint'})"
        if self.lambda_max <= 0:
            return f"its multipliers stayed 0 over {self.step} steps"
        return None


def sides(mode: str, kind: str, batch: int | None, dual_every: int | None = None
          ) -> tuple[StepBench, StepBench, str]:
    """(Faro step, BT step, data label) on the same data and backend, models identical at the start."""
    from faro_core.train import FaroConfig
    from faro_core.train.backends import FullBackend, HeadBackend
    from faro_core.train.inputs import load_training_data

    data, fmt, label = bbq_source()
    base = dict(data=data, format=fmt, mode=mode, epsilon=EPSILON, batch_size=batch, attribute=ATTRIBUTE)
    faro_cfg = FaroConfig(**base, constraints=[kind], dual_every=dual_every).resolved()
    bt_cfg = FaroConfig(**base, constraints=[]).resolved()
    _, df, index = load_training_data(faro_cfg)
    backend = (HeadBackend(faro_cfg, df, progress=False) if mode == "head"
               else FullBackend(faro_cfg, df, progress=False, device="cpu"))
    model = backend.model
    model.train()
    return (StepBench(faro_cfg, df, index, backend, model),
            StepBench(bt_cfg, df, index, backend, copy.deepcopy(model)), label)


def measure(mode: str, kind: str, rounds: int, batch: int | None = None,
            dual_every: int | None = None) -> tuple[dict[str, list[float]], StepBench, StepBench, str]:
    """Interleaved per-step seconds of both sides (after warm-up steps that are not recorded)."""
    faro, bt, label = sides(mode, kind, batch, dual_every)
    # a timed call covers one dual period, so every call holds one dual step (head: 20 steps, or 20 steps when
    # the dual step is left out; full: 5). One-step calls in full mode put the dual step in 1 round of 5,
    # which the median then dropped.
    faro.steps_per_call = bt.steps_per_call = min(max(1, faro.dual_every), 20)
    fns: dict[str, Callable[[], None]] = {"faro": faro, "bt": bt}
    return interleave(fns, rounds, warmup=2 if mode == "head" else 1), faro, bt, label


def check_binds(faro: StepBench, mode: str, kind: str, lambdas: dict[str, float]) -> bool:
    """Record the Faro side's largest multiplier; False (after saying why on stderr) when it never binds."""
    why = faro.binds()
    if why is not None:
        print(f"overhead: the {mode}-mode {kind.upper()}({ATTRIBUTE}) side never binds: {why}; its step would be "
              f"plain Bradley-Terry's", file=sys.stderr)
        return False
    lambdas[mode] = faro.lambda_max
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="under a minute: fewer steps, full mode at batch 4")
    ap.add_argument("--constraint", default="dp", choices=["dp", "eo", "cf"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    head_rounds, full_rounds = (10, 2) if args.quick else (100, 6)
    full_batch = 4 if args.quick else None
    rows, figs = [], {}
    lambdas: dict[str, float] = {}
    label = ""
    torch.set_num_threads(1)  # what the trainer uses in head mode on CPU
    never = 10**9  # a dual step that never comes: the primal step's own overhead
    for key, dual, desc in (("ratio_head", None, "head (default: dual step every 20 steps on a fresh pass)"),
                            ("ratio_head_primal", never, "head, dual steps left out (primal step only)")):
        t, faro, _, label = measure("head", args.constraint, head_rounds, dual_every=dual)
        if dual is None and not check_binds(faro, "head", args.constraint, lambdas):
            return 1
        t = {k: [x / faro.steps_per_call for x in v] for k, v in t.items()}  # seconds per step
        r = paired_ratios(t["faro"], t["bt"])
        figs[key] = round(quartiles(r)[1], 4)
        rows.append([desc, f"{faro.bs} (+{faro.cbs})" if faro.cbs else str(faro.bs),
                     head_rounds * faro.steps_per_call,
                     fmt_spread(t["bt"], 1e3, 2), fmt_spread(t["faro"], 1e3, 2), fmt_spread(r, 1.0, 3),
                     "met" if figs[key] <= 1.03 else "not met"])
    t, faro, bt, _ = measure("full", args.constraint, full_rounds, full_batch)
    if not check_binds(faro, "full", args.constraint, lambdas):
        return 1
    t = {k: [x / faro.steps_per_call for x in v] for k, v in t.items()}  # seconds per step
    r = paired_ratios(t["faro"], t["bt"])
    figs["ratio_full"] = round(quartiles(r)[1], 4)
    # the two sides' batches differ (Faro's by whole items): the same ratio per real token of the batches timed
    tok = {"faro": faro.tokens[-full_rounds:], "bt": bt.tokens[-full_rounds:]}
    r_tok = paired_ratios([x / n for x, n in zip(t["faro"], tok["faro"])], [x / n for x, n in zip(t["bt"], tok["bt"])])
    figs["ratio_full_per_token"] = round(quartiles(r_tok)[1], 4)
    figs["tokens_full_faro_over_bt"] = round(sum(tok["faro"]) / sum(tok["bt"]), 4)
    rows.append([f"full (MiniLM fine-tuned, max length {faro.config.max_length})", str(faro.bs),
                 full_rounds * faro.steps_per_call,
                 fmt_spread(t["bt"], 1e3, 0), fmt_spread(t["faro"], 1e3, 0), fmt_spread(r, 1.0, 3),
                 "met" if figs["ratio_full"] <= 1.03 else "not met"])
    figs.update({f"lambda_max_{m}": round(v, 5) for m, v in lambdas.items()}, attribute=ATTRIBUTE)
    binds = ", ".join(f"{m} {v:.4g}" for m, v in lambdas.items())
    body = (f"Attribute measured: **{ATTRIBUTE}** (BBQ's default). "
            f"Time of one Faro training step ({args.constraint.upper()}({ATTRIBUTE}) constraint, ε = {EPSILON:g}; it "
            f"binds: largest multiplier {binds}; its Bradley–Terry batch drawn by whole items, which the role terms "
            f"reuse) over one plain "
            f"Bradley–Terry step: same model init, data ({label}), batch size and optimizer; forward, loss, backward, "
            f"Adam step, dual step and log row; the two sides alternate call by call (A B, B A, ...), a call "
            f"being one dual period (20 steps in head mode, {faro.steps_per_call} in full mode), so each holds "
            f"its dual step. "
            f"Milliseconds per step and "
            f"per-round ratios: median [IQR]. {machine_line()}.\n\n"
            + md_table(["mode", "batch (+ constraint batch)", "steps / side", "BT ms", "Faro ms",
                        "Faro / BT", "goal ≤ 1.03"], rows)
            + f"\n\nFull mode: the Faro side's batches (whole items) held {figs['tokens_full_faro_over_bt']:.3f}× the "
            f"BT side's real tokens over the timed steps; per real token, Faro / BT = "
            f"{fmt_spread(r_tok, 1.0, 3)} (`ratio_full_per_token`)."
            + "\n\nProduced by `python bench/overhead.py" + (" --quick" if args.quick else "") + "`.")
    finish("overhead", "Overhead of a Faro step over a BT step", body, figs, args.json)
    return 0


BENCH = Benchmark("overhead", "speed", "Faro's constrained step over a plain BT step (goal <= 1.03)",
                  run=main)

if __name__ == "__main__":
    raise SystemExit(BENCH.run())
