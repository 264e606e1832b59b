"""Overhead of Faro's constrained step over a plain Bradley-Terry step (goal <= 1.03).

    python bench/overhead.py [--quick] [--constraint dp] [--json]

Both sides run the real training step of :func:`faro_core.train.trainer._fit` (same model init, same
optimizer, same data and BT batch): index draw, forward of the batch (plus, for Faro in head mode, the separate
constraint batch of ``constraint_batch_size`` pairs), BT loss, Faro's proxy penalty, backward, Adam step and
Faro's dual step (strict cell statistics, running sums, multiplier update; in head mode, when the trainer has
``dual_every``, every 5th step on a no-grad forward over the whole training split, so head steps are timed in
calls of 5) and the per-step log row. Run-store
writes, which both sides share, are left out (that makes the ratio larger, not smaller).

Head mode: cached MiniLM features of BBQ pairs, MLP head (256 hidden), batch 128, 1 torch thread (the
trainer's setting), once with the default constraint batch (1024 pairs) and once with
``constraint_batch_size=0`` (constraint terms on the BT batch). Full mode: MiniLM fine-tuned, batch 32, max
length 128 (defaults; constraint terms on the BT batch), 1 thread too (faster than 2 on these shared cores: see
bench/vs_trl.py). Sides alternate step by step (A B, B A,
...).
Writes bench/results/overhead.md; with --json the last stdout line is
``{"ratio_head": ..., "ratio_head_cbs0": ..., "ratio_full": ...}``.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from _common import (
    bbq_source,
    finish,
    fmt_spread,
    interleave,
    machine_line,
    md_table,
    paired_ratios,
    quartiles,
)


class StepBench:
    """One side of the comparison: a model, its optimizer and ProxyGDA state, and the trainer's step."""

    def __init__(self, config: Any, df: Any, index: Any, backend: Any, model: torch.nn.Module) -> None:
        from faro_core.constraints import ConstraintSet
        from faro_core.train.proxy_gda import ProxyGDA
        from faro_core.train.trainer import PairTensors

        self.config, self.backend, self.model = config, backend, model
        self.tens = PairTensors.from_frame(df, index)
        self.train_idx = torch.from_numpy((df["split"] == "train").to_numpy().nonzero()[0])
        self.constraints = ConstraintSet.parse(config.active_constraints, config.epsilon, index,
                                               config.min_count, config.temperature or None)
        self.need_twins = any(c.kind == "cf" for c in self.constraints.constraints)
        if hasattr(self.constraints, "fix_cells"):  # as the trainer does: constrain cells large enough in train
            tr, zero = self.train_idx, torch.zeros(len(df))
            nan = torch.where(self.tens.has_twin, 0.0, float("nan"))
            self.constraints.fix_cells(self.tens.batch(tr, (zero[tr], zero[tr], nan[tr], nan[tr])))
        self.opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.gda = ProxyGDA(self.constraints, dual_lr=config.dual_lr, ema=config.ema)
        n = len(self.train_idx)
        self.bs = min(config.batch_size, n)
        self.cbs = min(config.constraint_batch_size or 0, n)
        self.spe = math.ceil(n / self.bs)
        self.step = 0
        # head mode (newer trainers): the dual step every ``dual_every`` steps on the whole training split
        self.dual_every = int(getattr(config, "dual_every", 0) or 0) if self.constraints else 0
        self.g_strict = torch.zeros(len(self.constraints))
        self.steps_per_call = 1

    def __call__(self) -> None:
        """``steps_per_call`` training steps, as in the trainer's loop (single process)."""
        for _ in range(self.steps_per_call):
            self.one_step()

    def one_step(self) -> None:
        """One training step, as in the trainer's loop (single process)."""
        from faro_core.train.proxy_gda import bt_loss
        from faro_core.train.trainer import _split_rewards

        config, constraints, gda, n_train = self.config, self.constraints, self.gda, len(self.train_idx)
        epoch, pos = divmod(self.step, self.spe)
        g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        perm = self.train_idx[torch.randperm(n_train, generator=g)]
        local = perm[pos * self.bs:(pos + 1) * self.bs]
        n_bt = len(local)
        if constraints and self.cbs:
            gc = torch.Generator().manual_seed(config.seed * 7_919 + self.step)
            local = torch.cat([local, self.train_idx[torch.randperm(n_train, generator=gc)[:self.cbs]]])
        rewards = tuple(r.float() for r in self.backend.rewards(self.model, local, with_twins=self.need_twins))
        pb = self.tens.batch(local[:n_bt], tuple(r[:n_bt] for r in rewards))
        pc = self.tens.batch(local[n_bt:], tuple(r[n_bt:] for r in rewards)) if constraints and self.cbs else pb
        loss_bt = bt_loss(pb.r_chosen, pb.r_rejected)
        loss = loss_bt + gda.penalty(pc) if constraints else loss_bt
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.dual_every:
            if (self.step + 1) % self.dual_every == 0:
                gda.ema = 0.0
                rw = _split_rewards(self.backend, self.model, self.train_idx, with_twins=self.need_twins)
                self.g_strict = gda.dual_step(self.tens.batch(self.train_idx, rw))
        else:
            self.g_strict = gda.dual_step(pc)
        g_strict = self.g_strict
        self.step += 1
        row: dict[str, Any] = {"step": self.step, "loss": round(float(loss.detach()), 6),
                               "bt_loss": round(float(loss_bt.detach()), 6)}
        if constraints:
            row["violation"] = constraints.max_by_kind(g_strict)
            row["lambda_max"] = float(gda.lam.max())
            row["lambda"] = [round(v, 5) for v in gda.lam.tolist()]
            row["g"] = [round(v, 5) for v in g_strict.tolist()]


def sides(mode: str, kind: str, cbs: int | None, batch: int | None) -> tuple[StepBench, StepBench, str]:
    """(Faro step, BT step, data label) on the same data and backend, models identical at the start."""
    from faro_core.train import FaroConfig
    from faro_core.train.trainer import FullBackend, HeadBackend, load_training_data

    data, fmt, label = bbq_source()
    base = dict(data=data, format=fmt, mode=mode, epsilon=0.05, batch_size=batch)
    faro_cfg = FaroConfig(**base, constraints=[kind], constraint_batch_size=cbs).resolved()
    bt_cfg = FaroConfig(**base, constraints=[]).resolved()
    _, df, index = load_training_data(faro_cfg)
    backend = (HeadBackend(faro_cfg, df, progress=False) if mode == "head"
               else FullBackend(faro_cfg, df, progress=False, device="cpu"))
    model = backend.model
    model.train()
    return (StepBench(faro_cfg, df, index, backend, model),
            StepBench(bt_cfg, df, index, backend, copy.deepcopy(model)), label)


def measure(mode: str, kind: str, cbs: int | None, rounds: int, batch: int | None = None
            ) -> tuple[dict[str, list[float]], StepBench, str]:
    """Interleaved per-step seconds of both sides (after warm-up steps that are not recorded)."""
    faro, bt, label = sides(mode, kind, cbs, batch)
    if mode == "head":  # 5 steps per timed call: covers one periodic dual step (dual_every = 5)
        faro.steps_per_call = bt.steps_per_call = max(5, faro.dual_every)
    fns: dict[str, Callable[[], None]] = {"faro": faro, "bt": bt}
    return interleave(fns, rounds, warmup=2 if mode == "head" else 1), faro, label


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="under a minute: fewer steps, full mode at batch 4")
    ap.add_argument("--constraint", default="dp", choices=["dp", "eo", "cf"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    head_rounds, full_rounds = (10, 2) if args.quick else (100, 12)
    full_batch = 4 if args.quick else None
    rows, figs = [], {}
    label = ""
    torch.set_num_threads(1)  # what the trainer uses in head mode on CPU
    for key, cbs, desc in (("ratio_head", None, "head, constraint batch 1024 (default)"),
                           ("ratio_head_cbs0", 0, "head, constraint_batch_size=0")):
        t, faro, label = measure("head", args.constraint, cbs, head_rounds)
        t = {k: [x / faro.steps_per_call for x in v] for k, v in t.items()}  # seconds per step
        r = paired_ratios(t["faro"], t["bt"])
        figs[key] = round(quartiles(r)[1], 4)
        rows.append([desc, f"{faro.bs} (+{faro.cbs})" if faro.cbs else str(faro.bs),
                     head_rounds * faro.steps_per_call,
                     fmt_spread(t["bt"], 1e3, 2), fmt_spread(t["faro"], 1e3, 2), fmt_spread(r, 1.0, 3),
                     "met" if figs[key] <= 1.03 else "not met"])
    t, faro, _ = measure("full", args.constraint, None, full_rounds, full_batch)
    r = paired_ratios(t["faro"], t["bt"])
    figs["ratio_full"] = round(quartiles(r)[1], 4)
    rows.append([f"full (MiniLM fine-tuned, max length {faro.config.max_length})", str(faro.bs), full_rounds,
                 fmt_spread(t["bt"], 1e3, 0), fmt_spread(t["faro"], 1e3, 0), fmt_spread(r, 1.0, 3),
                 "met" if figs["ratio_full"] <= 1.03 else "not met"])
    body = (f"Time of one Faro training step ({args.constraint.upper()} constraint, ε = 0.05) over one plain "
            f"Bradley–Terry step: same model init, data ({label}), batch and optimizer; forward, loss, backward, "
            f"Adam step, dual step and log row; the two sides alternate step by step (A B, B A, ...). "
            f"Milliseconds per step and "
            f"per-round ratios: median [IQR]. {machine_line()}.\n\n"
            + md_table(["mode", "batch (+ constraint batch)", "steps / side", "BT ms", "Faro ms",
                        "Faro / BT", "goal ≤ 1.03"], rows)
            + "\n\nProduced by `python bench/overhead.py" + (" --quick" if args.quick else "") + "`.")
    finish("overhead", "Overhead of a Faro step over a BT step", body, figs, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
