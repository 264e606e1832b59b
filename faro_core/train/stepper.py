"""One process's training step (:class:`TrainStepper`), shared by the training loop and the benchmarks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import torch

from faro_core.errors import FaroError
from faro_core.fairness.constraint_set import ConstraintSet
from faro_core.fairness.pairs import GroupIndex, PairBatch, PairTensors
from faro_core.fairness.role_constraint import ITEM_TERMS
from faro_core.models.reward import bt_loss
from faro_core.train import methods
from faro_core.train.backends import HeadBackend, all_reduce_sum, split_rewards, to_device
from faro_core.train.config import FaroConfig
from faro_core.train.optim import make_adam
from faro_core.train.proxy_gda import ProxyGDA
from faro_core.train.role_batches import ItemBatches


class TrainStepper:
    """One process's training step, shared by the trainer's loop and ``bench/overhead.py``.

    A step: draw the process's batch (seeded by epoch, so a resumed run replays it), score it (one forward;
    twins too when CF is on), Bradley-Terry loss plus the linearized constraint penalty
    (:meth:`ProxyGDA.penalty`), backward, Adam step, and every ``dual_every`` steps the dual step on the
    training split's cell statistics. Under DDP each process owns a fixed shard of the training split and
    draws its batches from it, so the processes' reward buffers are disjoint and their statistics add up
    under the all-reduce. With no constraint the step is exactly plain Bradley-Terry.
    """

    def __init__(self, config: FaroConfig, df: pd.DataFrame, index: GroupIndex, tens: PairTensors, backend: Any,
                 model: torch.nn.Module, rank: int = 0, world: int = 1, data_name: str = "the data",
                 opt: Any = None) -> None:
        self.config, self.tens, self.backend, self.model = config, tens, backend, model
        self.ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        self.constraints = ConstraintSet.parse(config.active_constraints, config.epsilon, index, config.min_count,
                                               config.temperature or None)
        empty = [c.kind for c in self.constraints.constraints if not c.names()]
        if empty:  # e.g. EO on data whose group column is empty: nothing to compare, say so (not a crash)
            raise FaroError(f"constraint(s) {empty} have nothing to compare in {data_name!r}: no groups (DP: the responses' groups, "
                            f"EO: column 'group') or no counterfactual twins (CF); pass --group COLUMN or drop "
                            f"the constraint")
        self.need_twins = any(c.kind == "cf" for c in self.constraints.constraints)
        train_idx = torch.from_numpy(np.flatnonzero((df["split"] == "train").to_numpy()))
        n_train = len(train_idx)
        if n_train == 0:
            raise FaroError("the training split is empty")
        # which cells are large enough to constrain: counts only, so any rewards do (0; NaN marks "no twin")
        zero, twin_or_nan = torch.zeros(len(df)), torch.where(tens.has_twin, 0.0, float("nan"))
        tr = train_idx
        self.cell_counts = self.constraints.fix_cells(tens.batch(tr, (zero[tr], zero[tr], twin_or_nan[tr],
                                                                      twin_or_nan[tr])))
        # ``opt``: given by the batched engine (a member's view of the stacked heads' Adam)
        self.opt = opt if opt is not None else make_adam(model.parameters(), lr=config.lr,
                                                         weight_decay=config.weight_decay)
        fixed = config.fixed_lambda if methods.get(config.method).fixed_lambda else None
        self.gda = ProxyGDA(self.constraints, dual_lr=config.dual_lr, ema=config.ema, fixed_lambda=fixed,
                            reduce=all_reduce_sum, dual_signal=config.dual_signal, lambda_max=config.lambda_max)
        method = methods.get(config.method)
        self.weights = method.example_weights(df) if method.example_weights else None
        # a method whose training loss is not Bradley-Terry (group DRO, the alpha-fair regulariser); BT's loss is
        # still what the history logs as bt_loss
        self.pair_loss = method.loss(config, df) if method.loss else None
        self.world = world
        bs = min(config.batch_size, n_train)
        self.cbs = min(config.constraint_batch_size or 0, n_train)
        self.dual_every = max(1, config.dual_every or 1) if self.constraints else 0
        self.shard = train_idx[rank::world]
        if world > 1 and tens.role_item is not None:  # role terms need whole items: shard by item
            item = tens.role_item[train_idx]
            self.shard = train_idx[torch.where(item >= 0, item, torch.arange(len(item))) % world == rank]
        self.bs_local = max(1, math.ceil(bs / world))
        self.steps_per_epoch = math.ceil(n_train / bs)
        self.g_strict = torch.zeros(len(self.constraints))
        self._viol = self.constraints.max_by_kind(self.g_strict)  # log summaries, refreshed at dual steps
        self._lam_max: tuple[torch.Tensor | None, float] = (None, 0.0)  # (multipliers, their max) for log_row
        # head mode: a fresh no-grad pass over the split for each dual step (cheap there). Dual steps on a
        # buffer of each pair's latest rewards (no extra pass; what full mode uses) made the multipliers
        # overshoot on BBQ (training-split DP 0.81, against 0.10 with fresh statistics).
        self.exact_dual = config.dual_source == "exact" or (config.dual_source == "auto" and config.mode == "head")
        self.use_buffer = bool(self.constraints) and not self.exact_dual
        # They live on the rewards' device: a per-step copy to the host would stall a GPU every step.
        self.buf = [torch.zeros(len(df)) for _ in range(4)]
        self.seen = torch.zeros(len(df), dtype=torch.bool)
        # role constraints: the Bradley-Terry batch is drawn by whole items, and the role terms read its rewards
        role_cons = [c for c in self.constraints.constraints if c.term_key()[0] in ITEM_TERMS]
        self.item_batches = None
        if role_cons:
            self.item_batches = ItemBatches(self.shard, tens.role_item[self.shard], self.bs_local,
                                            self.steps_per_epoch, config.seed, world)
        if self.constraints and fixed is None:
            self.gda.set_pairs(tens.batch(torch.arange(len(df)), (zero, zero, twin_or_nan, twin_or_nan)), n_train)

    def _fill(self, idx: torch.Tensor, rewards: tuple[torch.Tensor, ...], idx_dev: torch.Tensor | None = None) -> None:
        """Store the batch's rewards in the buffer; ``idx_dev``: ``idx`` already on the rewards' device."""
        where = to_device(idx, rewards[0].device) if idx_dev is None else idx_dev
        for k, r in enumerate(rewards):
            if self.buf[k].device != r.device:
                self.buf[k] = self.buf[k].to(r.device)
            self.buf[k][where] = r.detach().float()
        self.seen[idx] = True

    def prepare(self) -> None:
        """Before the first step: fill the reward buffer in head mode (one cheap pass) when it is used."""
        if self.use_buffer and self.config.mode == "head" and not bool(self.seen[self.shard].all()):
            self._fill(self.shard, split_rewards(self.backend, self.model, self.shard, with_twins=self.need_twins))

    def buffer_state(self) -> dict[str, torch.Tensor] | None:
        """The reward buffer and the training loss's state (group DRO's weights), for a checkpoint (None when
        there is neither)."""
        out = dict(self.pair_loss.state()) if self.pair_loss is not None else {}
        if self.use_buffer:
            out.update({**{f"buf{k}": b.cpu() for k, b in enumerate(self.buf)}, "seen": self.seen})
        return out or None

    def load_buffers(self, extra: dict[str, torch.Tensor]) -> None:
        if self.pair_loss is not None:  # so a resumed run continues from the same group weights
            self.pair_loss.load_state(extra)
        if self.world == 1 and "seen" in extra:  # so a resumed run replays exactly
            for k, b in enumerate(self.buf):
                b.copy_(extra[f"buf{k}"])
            self.seen.copy_(extra["seen"])

    def draw(self, step: int) -> tuple[torch.Tensor, int, int]:
        """(pair indices, n_bt, n_pair) of training step ``step`` (0-based): this process's Bradley-Terry batch
        (the first ``n_bt``), seeded by (seed, epoch) so a resumed run replays it, then the constraint batch
        (up to ``n_pair`` = the length). With a role constraint the Bradley-Terry batch holds whole items
        (:class:`~faro_core.train.role_batches.ItemBatches`); otherwise it is a slice of the epoch's
        permutation of the shard's pairs."""
        config = self.config
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self.item_batches is not None:
            local = self.item_batches.draw(step)
        else:
            g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
            perm = self.shard[torch.randperm(len(self.shard), generator=g)]
            local = perm[pos * self.bs_local:(pos + 1) * self.bs_local]
        n_bt = len(local)
        if self.constraints and self.cbs:
            # An extra constraint batch (seeded by step, so resume replays it): the fixed-penalty baseline's
            # hinge needs per-batch cell rates, which a 128-pair batch over hundreds of cells leaves empty.
            gc = torch.Generator().manual_seed(config.seed * 7_919 + step)
            local = torch.cat([local, self.shard[torch.randperm(len(self.shard),
                                                                generator=gc)[:math.ceil(self.cbs / self.world)]]])
        return local, n_bt, len(local)

    def batch_loss(self, local: torch.Tensor, n_bt: int, n_pair: int, rewards: tuple[torch.Tensor, ...]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, Bradley-Terry loss) of the batch ``local`` (from :meth:`draw`) given its rewards (r_chosen,
        r_rejected, cf_chosen, cf_rejected; [len(local)] each): BT on the first ``n_bt`` pairs (weighted by the
        method's example weights), the pair-level constraint penalty on the first ``n_pair`` and the role
        constraints' item terms on the Bradley-Terry pairs (whole items, scored by the same forward); the reward
        buffer is filled when used."""
        constraints, gda = self.constraints, self.gda
        r_c, r_r = rewards[0][:n_bt], rewards[1][:n_bt]
        # the batch's indices on the rewards' device, copied once (asynchronously) for the penalty and the buffer
        local_dev = to_device(local, r_c.device) if constraints else local
        w = to_device(self.weights[local[:n_bt]], r_c.device) if self.weights is not None else None
        if n_bt:
            loss_bt = bt_loss(r_c, r_r, w)
            fit = self.pair_loss(r_c, r_r, local[:n_bt]) if self.pair_loss is not None else loss_bt
        else:  # a shard's last batch can be empty under DDP: still join the gradient all-reduce
            loss_bt = fit = sum(p.sum() * 0.0 for p in self.model.parameters())
        if constraints:
            head = tuple(r[:n_pair] for r in rewards)
            # with every multiplier 0 the linearized penalty (zero coefficients, zero constant) adds exactly 0 to
            # the loss and to its gradient, so it is not computed (a constrained run is BT until lambda rises)
            linear = gda.fixed is None and bool(gda.lam.any())
            loss = fit
            if gda.fixed is not None:  # the hinge needs cell rates: a full PairBatch
                loss = fit + gda.penalty(self.tens.batch(local[:n_pair], head))
            elif linear:  # the linearized penalty needs the rewards only
                loss = fit + gda.penalty(PairBatch(*head[:2], *([None] * 6), *head[2:]), local_dev[:n_pair])
            if self.item_batches is not None and linear and n_bt:
                # the role constraints' item terms, on the Bradley-Terry batch's whole items (the fixed-lambda
                # hinge above holds them already, with the batch's own cell rates)
                head_bt = tuple(r[:n_bt] for r in rewards)
                loss = loss + gda.item_penalty(self.tens.batch(local[:n_bt], head_bt), local[:n_bt],
                                               self.item_batches.factor)
            if self.use_buffer:
                self._fill(local, rewards, local_dev)
        else:
            loss = fit
        return loss, loss_bt

    def dual_due(self, step: int) -> bool:
        """Does the dual player step after training step ``step`` (0-based)?"""
        return bool(self.dual_every) and (step + 1) % self.dual_every == 0

    def dual_rewards(self) -> tuple[torch.Tensor, ...]:
        """The fresh pass an exact dual step reads: the training shard's rewards (head mode: each distinct
        response scored once)."""
        if isinstance(self.backend, HeadBackend):
            return self.backend.unique_rewards(self.model, self.shard, with_twins=self.need_twins)
        return split_rewards(self.backend, self.model, self.shard, with_twins=self.need_twins)

    def dual_step(self, rewards: tuple[torch.Tensor, ...] | None = None, like: TrainStepper | None = None) -> None:
        """The dual step on the training split's cell statistics: from a fresh pass (head mode: each distinct
        response once; ``rewards``: that pass, already computed by :meth:`dual_rewards` -- the batched engine
        scores it once for members that share their weights) or from the reward buffer; the strict violations
        land in :attr:`g_strict`. ``like``: a member of the same batched slot that has just taken this step on
        the same ``rewards`` (:meth:`ProxyGDA.dual_step`: its statistics are reused where they are provably
        this stepper's too)."""
        constraints, gda = self.constraints, self.gda
        if self.exact_dual:
            rw = rewards if rewards is not None else self.dual_rewards()
            if like is not None and gda.shares_statistics_with(like.gda) and torch.equal(like.shard, self.shard):
                self.g_strict = gda.dual_step(None, like=like.gda)
            else:
                self.g_strict = gda.dual_step(self.tens.batch(self.shard, rw))
        else:
            mine = self.shard[self.seen[self.shard]]
            self.g_strict = gda.dual_step(self.tens.batch(mine, tuple(b[to_device(mine, b.device)] for b in self.buf)))
        self._viol = constraints.max_by_kind(self.g_strict)

    def step(self, step: int) -> dict[str, Any]:
        """Training step number ``step`` (0-based): :meth:`draw`, one forward, :meth:`batch_loss`, backward,
        Adam step, and :meth:`dual_step` when due. Returns loss tensors, the step number and whether the dual
        step ran; the strict violations of the last dual step are in :attr:`g_strict`."""
        local, n_bt, n_pair = self.draw(step)
        rewards = tuple(r.float() for r in self.backend.rewards(self.ddp_model, local, with_twins=self.need_twins))
        loss, loss_bt = self.batch_loss(local, n_bt, n_pair, rewards)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        dual_now = self.dual_due(step)
        if dual_now:
            self.dual_step()
        return {"step": step + 1, "epoch": step // self.steps_per_epoch, "loss": loss, "loss_bt": loss_bt,
                "dual": dual_now}

    @staticmethod
    def finish_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Turn the rows' losses into rounded floats: tensors with one device read for all of them, floats (the
        batched engine reads each slot's once) as they are."""
        held = [(r, k) for r in rows for k in ("loss", "bt_loss") if torch.is_tensor(r[k])]
        if held:
            for (r, k), v in zip(held, torch.stack([r[k].float().reshape(()) for r, k in held]).tolist()):
                r[k] = v
        for r in rows:
            r["loss"], r["bt_loss"] = round(r["loss"], 6), round(r["bt_loss"], 6)
        return rows

    def log_row(self, out: dict[str, Any]) -> dict[str, Any]:
        """The history row of a step: losses, the largest strict violation per kind and the largest
        multiplier every step; the full multiplier and violation vectors when they change (dual steps)."""
        # losses stay tensors until finish_rows: reading them back every step would stall a GPU
        loss, loss_bt = out["loss"], out["loss_bt"]
        row: dict[str, Any] = {"step": out["step"], "epoch": out["epoch"],
                               "loss": loss.detach() if torch.is_tensor(loss) else loss,
                               "bt_loss": loss_bt.detach() if torch.is_tensor(loss_bt) else loss_bt}
        if self.constraints:
            row["violation"] = dict(self._viol)
            lam = self.gda.lam
            if self._lam_max[0] is not lam:  # the multipliers are replaced at a dual step, never changed in place
                self._lam_max = (lam, float(lam.max()))
            row["lambda_max"] = self._lam_max[1]
            if out["dual"] or out["step"] == 1:
                row["lambda"] = [round(v, 5) for v in self.gda.lam.tolist()]
                row["g"] = [round(v, 5) for v in self.g_strict.tolist()]
        return row
