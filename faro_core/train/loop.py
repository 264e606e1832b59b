"""The Faro trainer: Bradley-Terry reward model under DP / EO / CF constraints (DESIGN §3-§5).

``train(config, store, inputs=...)`` loads and splits the data (through ``inputs``, a
:class:`~faro_core.train.inputs.TrainInputs`), builds the reward model (head or full mode), runs ProxyGDA
(or the method's variant on the same code path, :mod:`faro_core.train.methods`), selects the iterate on the
validation split, scores every pair of every split and writes the run (see :mod:`faro_core.store.runs`).
It checkpoints every ``ckpt_every`` steps; ``resume=True`` continues from the last checkpoint to the same
result as an uninterrupted run (data order depends only on (seed, epoch), and all state is checkpointed).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from faro_core.errors import FaroError
from faro_core.fairness.attributes import attribute_strategy
from faro_core.fairness.constraint_set import ConstraintSet, all_constraints
from faro_core.fairness.metrics import split_metrics
from faro_core.fairness.pairs import GroupIndex, PairBatch, PairTensors
from faro_core.io import to_json, write_text
from faro_core.models.threads import kept_threads
from faro_core.store.runs import Heartbeat, Run, RunStore
from faro_core.train import methods
from faro_core.train.backends import (
    FullBackend,
    HeadBackend,
    maybe_init_distributed,
    rank_and_world,
    split_rewards,
)
from faro_core.train.checkpoint import load_checkpoint, save_checkpoint
from faro_core.train.config import FaroConfig
from faro_core.train.inputs import TrainInputs, split_indices
from faro_core.train.outputs import (
    data_record,
    gold_labels,
    role_frame,
    role_metrics,
    scores_frame,
    split_metrics_of,
    write_scores,
)
from faro_core.train.selection import VAL_LOG_KEYS, IterateAverage, IterateSelector, selected_by
from faro_core.train.stepper import TrainStepper

# Rows are written in groups of 10 steps (and at every evaluation, checkpoint and the end): on a GPU each
# read-back is a synchronization (TRL logs the same way); on a CPU one file append per ~2 ms head step
# cost ~4% of a small sweep. A resumed run replays the history up to its checkpoint, so nothing is lost.
LOG_EVERY = 10


def train(config: FaroConfig | None, store: RunStore | None = None, run_id: str | None = None,
          resume: bool = False, progress: bool = True, on_step: Callable[[dict[str, Any]], None] | None = None,
          inputs: TrainInputs | None = None) -> Run:
    """Train one reward model and write it to the run store. Returns the finished :class:`Run`.

    With ``resume=True`` and an existing ``run_id``, continues from the run's last checkpoint with the
    run's stored config (``config`` is then ignored). ``inputs``: where data and features come from
    (default: loaded afresh); ``on_step`` receives every history row.
    """
    store = store or RunStore()
    inputs = inputs or TrainInputs()
    maybe_init_distributed()
    rank, world = rank_and_world()
    if resume:
        if not run_id:
            raise FaroError("--resume needs a run id")
        run = store.get(run_id)
        if run.status == "done":
            return run
        config = FaroConfig.from_dict(run.config)
    else:
        assert config is not None, "train() needs a config unless it resumes"
        config = config.resolved()
        if rank == 0:
            run = store.create(config.stored_dict(), run_id=run_id)
        if world > 1:  # every rank needs the same run id
            obj = [run.run_id if rank == 0 else None]
            torch.distributed.broadcast_object_list(obj, src=0)
            run = Run(obj[0], store.path(obj[0]))
    if rank == 0:
        run.set_status("running", world_size=world)
    try:
        with kept_threads(), Heartbeat(run) if rank == 0 else contextlib.nullcontext():
            method = methods.get(config.method)
            if method.fit is not None:
                method.fit(config, run, progress and rank == 0, inputs)
            else:
                _fit(config, run, resume, progress and rank == 0, rank, world, on_step, inputs)
    except BaseException as exc:
        if rank == 0:
            interrupted = isinstance(exc, KeyboardInterrupt)
            run.set_status("interrupted" if interrupted else "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    if rank == 0:
        run.set_status("done")
    return run


@dataclass
class _Prepared:
    """A run's data, model and step machinery, before the first step."""

    data: Any
    df: pd.DataFrame
    index: GroupIndex
    tens: PairTensors
    split_idx: dict[str, torch.Tensor]
    backend: Any
    model: torch.nn.Module
    stepper: TrainStepper
    measure: ConstraintSet
    cell_counts: dict[str, Any] = field(default_factory=dict)


def _prepare(config: FaroConfig, progress: bool, rank: int, world: int, inputs: TrainInputs) -> _Prepared:
    torch.manual_seed(config.seed)
    device = "cuda" if (config.mode == "full" and torch.cuda.is_available()) else "cpu"
    if config.mode == "head" and device == "cpu":
        # A head step is a few small matmuls: one thread is 4x faster than two when cores are shared
        # (measured 12 ms vs 47 ms per 1024x384 MLP forward), and sweeps run one process per core. The
        # backend's feature encoding still uses every idle core (FeatureCache restores this one thread after).
        torch.set_num_threads(1)
    data, df, index = inputs.load(config)
    tens = PairTensors.from_frame(df, index)
    split_idx = split_indices(df)
    if len(split_idx["train"]) == 0:
        raise FaroError("the training split is empty")
    if config.mode == "head":
        backend = HeadBackend(config, df, progress, feature_cache=inputs.feature_cache)
    else:
        backend = FullBackend(config, df, progress, device)
    model = backend.model.to(device)
    return prepare_run(config, data, df, index, tens, split_idx, backend, model, rank=rank, world=world)


def prepare_run(config: FaroConfig, data: Any, df: pd.DataFrame, index: GroupIndex, tens: PairTensors,
                split_idx: dict[str, torch.Tensor], backend: Any, model: torch.nn.Module, rank: int = 0,
                world: int = 1, opt: Any = None) -> _Prepared:
    """A run's step machinery on loaded data and a backend (shared by the members of a batch): its
    :class:`TrainStepper` (constraints, multipliers, weights; ``opt``: its optimizer, default a fresh Adam over
    ``model``) and what the loop measures. Warns when an asked-for constraint has no cell large enough."""
    stepper = TrainStepper(config, df, index, tens, backend, model, rank=rank, world=world, data_name=data.name,
                           opt=opt)
    prep = _Prepared(data, df, index, tens, split_idx, backend, model, stepper,
                     all_constraints(index, config.min_count), dict(stepper.cell_counts))
    idle = [c for c in stepper.constraints.constraints if c.cell_mask is not None and not bool(c.cell_mask.any())]
    if idle and rank == 0:  # asked for, but nothing to constrain: say so instead of silently training plain BT
        for c in idle:
            largest = int(c.full_counts[0].max()) if c.full_counts is not None and c.full_counts[0].numel() else 0
            print(f"faro: warning: no {c.kind.upper()} cell has {config.min_count} members in the training split "
                  f"(largest: {largest}), so {c.kind.upper()} constrains nothing and this run is plain "
                  f"Bradley-Terry for it; lower --min-count or use fewer --strata", file=sys.stderr)
        prep.cell_counts = {**prep.cell_counts, "unconstrained_kinds": [c.kind for c in idle]}
    return prep


def write_run_inputs(run: Run, prep: _Prepared, record: dict[str, Any] | None = None) -> None:
    """``constraints.json`` (names, epsilons, index, cell counts, which one-sided constraints bind) and
    ``data.json`` (``record``: its content where the caller has it, :func:`data_record` of ``prep``)."""
    constraints = prep.stepper.constraints
    run.write("constraints.json", {"names": constraints.names(), "epsilon": constraints.epsilons().tolist(),
                                   "index": prep.index.to_dict(), "cells": prep.cell_counts,
                                   "constrained": [bool(v) for c in constraints.constraints for v in
                                                   (c.cell_mask.tolist() * (2 if c.two_sided else 1))]})
    run.write("data.json", record if record is not None else data_record(prep.data, prep.split_idx, prep.backend))


class RunLoop:
    """Everything the training loop does for one run around its steps, shared by the solo loop
    (:func:`_fit`) and the batched engine (:mod:`faro_core.train.batched`), which steps many runs at once.

    ``resume=True`` restores the run's last checkpoint (model, optimizer, multipliers, buffers, best iterate)
    and drops the history beyond it, so that it is replayed. :meth:`after_step` takes one step's record
    (:meth:`TrainStepper.step`): the history row, every ``eval_every`` steps the validation pass and
    iterate selection (:class:`IterateSelector`; the weight average as a candidate), progress, and every
    ``ckpt_every`` steps a checkpoint. :meth:`finish` loads the selected iterate and writes the run's scores,
    model and metrics.
    """

    def __init__(self, config: FaroConfig, run: Run, prep: _Prepared, resume: bool = False, rank: int = 0,
                 on_step: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config, self.run, self.prep, self.rank, self.on_step = config, run, prep, rank, on_step
        stepper = prep.stepper
        self.total = stepper.steps_per_epoch * config.epochs
        self.eval_every = config.eval_every or stepper.steps_per_epoch
        self.step, self.best, self.best_state = 0, None, None
        if resume:
            self._restore()
        self.better = IterateSelector(config, stepper.constraints, prep.index).better
        self.avg = IterateAverage(prep.model, config.average) if config.average and stepper.constraints else None
        self.pending: list[dict[str, Any]] = []
        # the current iterate's rewards on a split's pairs (the batched engine memoizes it per shared slot)
        self.score: Callable[[str, torch.Tensor], tuple[torch.Tensor, ...]] = (
            lambda split, idx: split_rewards(prep.backend, prep.model, idx))
        # and its metrics on them (memoized per shared slot too; the epsilon-dependent keys are the member's own)
        self.metrics: Callable[[str, PairBatch, torch.Tensor], dict[str, Any]] = (
            lambda split, batch, idx: split_metrics(batch, prep.stepper.constraints, prep.measure,
                                                    gold_labels(prep.df, prep.tens, idx)))
        # a copy of the current weights, kept as the selected iterate (the batched engine hands out one copy per
        # shared slot, taken before the next step runs beside the booking)
        self.snapshot: Callable[[], dict[str, torch.Tensor]] = lambda: copy.deepcopy(prep.model.state_dict())
        # writes a checkpoint (the batched engine collects its members' and writes them together)
        self.checkpoint: Callable[[tuple[Any, ...]], None] = lambda args: save_checkpoint(*args)
        self.last_progress = 0.0
        self.progress_every = 0.5  # seconds between progress.json writes (a batch of many members spaces them)
        self.t0 = time.perf_counter()

    def _restore(self) -> None:
        """Step, best validation record and best state from the run's last checkpoint; the history beyond
        the checkpoint (all of it, when killed before the first) is dropped so that it is replayed."""
        prep, stepper = self.prep, self.prep.stepper
        loaded = load_checkpoint(self.run, prep.model, stepper.opt, stepper.gda)
        if loaded is not None:
            st, self.best_state, extra = loaded
            self.step, self.best = st["step"], st.get("best")
            stepper.load_buffers(extra)
            stepper.g_strict = stepper.gda.last_strict.clone()
            stepper._viol = stepper.constraints.max_by_kind(stepper.g_strict)
        if self.rank == 0:
            hist = [h for h in self.run.history() if h.get("step", 0) <= self.step]
            write_text(self.run.file("history.jsonl"), "".join(to_json(h) + "\n" for h in hist))

    def evaluate(self, split: str) -> dict[str, Any]:
        """Metrics of the current iterate on ``split`` (``_batch``: its pairs, for the chance tier)."""
        prep = self.prep
        idx = prep.split_idx[split]
        batch = prep.tens.batch(idx, self.score(split, idx))
        out = self.metrics(split, batch, idx)
        out["_batch"] = batch  # for the chance tier, computed only when it can change the choice (better())
        return out

    def after_step(self, out: dict[str, Any]) -> None:
        """Book one training step (``out`` from :meth:`TrainStepper.step`): :meth:`log_step`, then
        :meth:`book_step`."""
        self.book_step(self.log_step(out))

    def log_step(self, out: dict[str, Any]) -> dict[str, Any]:
        """The history row of one training step (``out`` from :meth:`TrainStepper.step`): it reads the
        multipliers and violations, so it is taken before the next step's dual step can move them."""
        row = self.prep.stepper.log_row(out)
        # when the step ended (host clock, seconds since this loop started; restarts on resume): rows reach
        # the file and ``on_step`` in groups, so their arrival time is not the step's time
        row["time"] = round(time.perf_counter() - self.t0, 4)
        return row

    def book_step(self, row: dict[str, Any]) -> None:
        """Book a logged step (:meth:`log_step`'s ``row``): every ``eval_every`` steps the validation pass
        (:attr:`score`, :attr:`metrics`) and the selection (the selected weights from :attr:`snapshot`), the
        history rows and progress, every ``ckpt_every`` steps a checkpoint."""
        config, model = self.config, self.prep.model
        self.step = step = row["step"]
        if self.avg is not None:
            self.avg.update(model)
        if step % self.eval_every == 0 or step == self.total:
            val = self.evaluate("val")
            is_better = config.select == "last" or self.better(val, self.best)
            val.pop("_batch", None)
            row["val"] = {k: val[k] for k in VAL_LOG_KEYS if k in val}
            if is_better:
                self.best = {**val, "step": step}
                self.best_state = self.snapshot()
            if self.avg is not None and config.select != "last":
                # the averaged iterate is a candidate too (a deterministic stand-in for the randomized
                # mixture of iterates that Cotter et al.'s guarantee is about)
                with self.avg.swapped(model):
                    val_avg = self.evaluate("val")
                avg_better = self.better(val_avg, self.best)
                row["val_average"] = {k: val_avg[k] for k in VAL_LOG_KEYS if k in val_avg}
                if avg_better:
                    self.best = {**val_avg, "step": step, "averaged": True}
                    self.best_state = copy.deepcopy(self.avg.state)
        self.pending.append(row)
        ckpt_now = bool(config.ckpt_every) and step % config.ckpt_every == 0 and step < self.total
        if len(self.pending) >= LOG_EVERY or "val" in row or ckpt_now or step == self.total:
            self.flush()
        if self.rank == 0 and ckpt_now:
            self.checkpoint(self.checkpoint_args())

    def checkpoint_args(self) -> tuple[Any, ...]:
        """What :func:`~faro_core.train.checkpoint.save_checkpoint` takes for this run's checkpoint now."""
        stepper = self.prep.stepper
        return (self.run, self.prep.model, stepper.opt, stepper.gda, {"step": self.step, "best": self.best},
                self.best_state, stepper.buffer_state())

    def flush(self) -> None:
        """Write the pending history rows (progress at most every :attr:`progress_every` seconds: an fsynced
        file per step cost ~7%; the last step's progress is written by :meth:`finish`, after the run's files)."""
        rows, self.pending = self.prep.stepper.finish_rows(self.pending), []
        if self.rank == 0 and rows:
            self.run.log(rows)
            if time.monotonic() - self.last_progress > self.progress_every and self.step < self.total:
                self.run.set_progress(self.step, self.total,
                                      epoch=(self.step - 1) // self.prep.stepper.steps_per_epoch)
                self.last_progress = time.monotonic()
            if self.on_step:
                for r in rows:
                    self.on_step(r)

    def finish(self, memo: dict[Any, Any] | None = None, model: torch.nn.Module | None = None) -> None:
        """Load the selected iterate; on rank 0 score every pair and write the run's files (``memo``: shared by
        the members of a batch, so that members whose selected iterates score alike compute the role
        report once). ``model``: the selected iterate already loaded in a model of its own (the batched
        engine finishes its members in parallel, and members of one slot share the slot's head)."""
        if self.rank == 0:
            write_final(self.config, self.run, self.final_outputs(memo, model), memo)
        elif self.best_state is not None:
            self.prep.model.load_state_dict(self.best_state)

    def final_outputs(self, memo: dict[Any, Any] | None = None, model: torch.nn.Module | None = None
                      ) -> FinalOutputs:
        """What :meth:`finish` writes, computed (:func:`final_outputs`) with the selected iterate (loaded into
        the run's model, or ``model`` holding it already)."""
        prep = self.prep
        if model is not None:
            prep = dataclasses.replace(prep, model=model)
        elif self.best_state is not None:
            prep.model.load_state_dict(self.best_state)
        return final_outputs(self.config, prep, self.best, self.step, self.total, memo)


def _fit(config: FaroConfig, run: Run, resume: bool, progress: bool, rank: int, world: int,
         on_step: Callable[[dict[str, Any]], None] | None, inputs: TrainInputs) -> None:
    prep = _prepare(config, progress, rank, world, inputs)
    if rank == 0:
        write_run_inputs(run, prep)
    loop = RunLoop(config, run, prep, resume=resume, rank=rank, on_step=on_step)
    stepper = prep.stepper
    stepper.prepare()
    bar = tqdm(total=loop.total, initial=loop.step, desc=run.run_id, unit="step", disable=not progress,
               file=sys.stderr)
    prep.model.train()
    while loop.step < loop.total:
        loop.after_step(stepper.step(loop.step))
        bar.update(1)
    bar.close()
    loop.finish()


def final_rewards(backend: Any, model: torch.nn.Module, n_pairs: int, memo: dict[Any, Any] | None = None
                  ) -> tuple[torch.Tensor, ...]:
    """The rewards of every pair (r_chosen, r_rejected, cf_chosen, cf_rejected; [n_pairs] each) under
    ``model``, which a finished run stores. ``memo``: shared by the members of a batch, so that members
    whose selected weights are equal score every pair once (keyed by the weights' bytes)."""
    if memo is None:
        return split_rewards(backend, model, torch.arange(n_pairs))
    key = ("scores", hashlib.sha1(b"".join(t.detach().cpu().contiguous().numpy().tobytes()
                                            for t in model.state_dict().values())).digest())
    if key not in memo:
        memo[key] = split_rewards(backend, model, torch.arange(n_pairs))
    return memo[key]


@dataclass
class FinalOutputs:
    """What a finished run writes, computed (:func:`final_outputs`) before it is written (:func:`write_final`):
    every pair's rewards ([N] arrays: r_chosen, r_rejected, cf_chosen, cf_rejected), ``model.json`` and
    ``metrics.json``, and the run's prepared state with the model that scored them."""

    prep: _Prepared
    rewards: tuple[np.ndarray, ...]
    meta: dict[str, Any]
    metrics: dict[str, Any]


def final_outputs(config: FaroConfig, prep: _Prepared, best: dict[str, Any] | None, step: int, total: int,
                  memo: dict[Any, Any] | None = None) -> FinalOutputs:
    """What a finished run writes, before it is written: every pair scored with ``prep.model`` (post-processed
    by the method, if it does), ``model.json`` and every split's metrics. ``memo``: shared by the members of a
    batch, the pairs' rewards by the weights' bytes and the metrics by the rewards' bytes, reused for equal
    inputs."""
    df, tens, backend, model = prep.df, prep.tens, prep.backend, prep.model
    constraints = prep.stepper.constraints
    scored = final_rewards(backend, model, len(df), memo)
    r_c, r_r, cf_c, cf_r = (t.numpy().copy() for t in scored)
    meta = dict(backend.meta)
    method = methods.get(config.method)
    pair_loss = prep.stepper.pair_loss
    if pair_loss is not None and hasattr(pair_loss, "weights"):  # group DRO: the final group weights
        meta["dro_weights"] = pair_loss.weights()
    if method.post_process is not None:
        r_c, r_r, extra = method.post_process(df, r_c, r_r, prep.index.dp_strata)
        meta.update(extra)
    rewards = (r_c, r_r, cf_c, cf_r)

    digest = (hashlib.sha1(b"".join(np.ascontiguousarray(a).tobytes() for a in rewards)).digest()
              if memo is not None else b"")

    def metrics_for(split: str) -> dict[str, Any]:
        idx = prep.split_idx[split]
        if memo is None:
            out = split_metrics_of(df, tens, idx, rewards, constraints, prep.measure)
        else:  # once per distinct rewards and constraints; the epsilon-dependent keys are the member's own
            key = ("split", split, digest, tuple(constraints.names()), config.min_count, config.temperature)
            if key not in memo:
                memo[key] = split_metrics_of(df, tens, idx, rewards, constraints, prep.measure, with_strict=True)
            base, g = memo[key]
            out = copy.deepcopy(base)
            if g is not None:
                out["max_excess"] = float((g - constraints.epsilons()).max())
                out["feasible"] = bool((g <= constraints.epsilons() + 1e-9).all())
        if out and attribute_strategy(prep.index.attribute).per_item:  # raw rates; named-group violations too
            if memo is None:
                out.update(role_metrics(df, tens, idx, rewards, prep.index, config.min_count))
            else:
                key = (split, config.min_count, digest)
                if key not in memo:
                    if ("role_frame", split) not in memo:
                        frame = role_frame(df, idx)
                        plan = attribute_strategy(prep.index.attribute).report_plan(frame)
                        memo["role_frame", split] = (frame, plan)
                    memo[key] = role_metrics(df, tens, idx, rewards, prep.index, config.min_count,
                                             *memo["role_frame", split])
                out.update(copy.deepcopy(memo[key]))
        return out

    metrics = {**metrics_for("val"), "split": "val", "selected_step": (best or {}).get("step", step),
               "selected_average": bool((best or {}).get("averaged", False)),
               "selected_by": selected_by(best, config, bool(constraints)), "steps": total,
               "test": metrics_for("test"), "train": metrics_for("train"),
               "constraints": config.active_constraints,
               "epsilon": config.epsilon if math.isfinite(config.epsilon) else None,
               "method": config.method}
    return FinalOutputs(prep, rewards, meta, metrics)


def write_final(config: FaroConfig, run: Run, out: FinalOutputs, memo: dict[Any, Any] | None = None) -> None:
    """Write what :func:`final_outputs` computed: ``scores.parquet``, the model, ``model.json``, ``metrics.json``
    and the final progress (``memo``: the batch's shared scores frame and encoded Parquet files)."""
    df = out.prep.df
    base = None
    if memo is not None:  # the scores frame's attribute columns, built once per batch
        base = memo.get("scores_frame")
        if base is None:
            base = memo["scores_frame"] = scores_frame(df)
    write_scores(run, df, out.prep.tens, out.rewards, base, cache=memo)
    out.prep.backend.export(run, out.prep.model)
    run.write("model.json", out.meta)
    run.write("metrics.json", out.metrics)
    run.set_progress(out.metrics["steps"], out.metrics["steps"], epoch=config.epochs)
