"""Batched head-mode training: the members of a sweep grid that share data and backbone train as one model.

``train_batch(configs, store, run_ids)`` trains M head-mode runs in lockstep in one process and writes each
to the run store as an ordinary run (same files, run ids and JSON keys as :func:`~faro_core.train.loop.train`).

One step of the batch: members that share a path (same seed, data and drawn batches, multipliers all 0:
:func:`share_key`) share one slot, and a slot forks at the dual step where their multipliers first differ. Each slot is an ordinary
:class:`~faro_core.models.reward.HeadRewardModel` with its own Adam, stepped as a solo run steps
(:class:`TrainStepper`: draw, forward, loss, backward, Adam, dual step when due) on one torch thread; the slots
are spread over one worker thread per core. After each step every member's
:class:`~faro_core.train.loop.RunLoop` does what the solo loop does: history, validation and iterate
selection, progress, checkpoints (written for all members with one sync), while the next step already runs
in the pool (its history rows, validation scores and weights' copy taken before, so the bookkeeping reads
nothing the step writes; only a checkpoint or a cancel poll waits); at the end the members are scored and
written in the pool's threads, each distinct selected iterate once. So a member is its solo run, bit for
bit on a CPU: same rewards on every pair, same selected iterate, same checkpoints, and a member interrupted in a
batch resumes solo (``faro train --resume``) or in a batch to the same result.

Cancelling a member (:meth:`Run.request_cancel`, what the dashboard's cancel does for a batch member) stops
its updates at the next step: it leaves the batch, is marked ``interrupted`` and keeps its last checkpoint,
while the others go on. A kill of the process leaves every unfinished member ``interrupted`` (their status
names the batch's process), each with its own last checkpoint.

Which methods batch is the registry's call (``Method.batches``, and no ``fit`` of its own); which configs
can share a batch: :func:`batch_key`; how many fit in memory: :func:`plan_batches`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from faro_core.errors import FaroError
from faro_core.fairness.chance import PERMUTED_KINDS
from faro_core.fairness.metrics import split_metrics
from faro_core.fairness.pairs import PairTensors
from faro_core.io import joined_sync, one_sync
from faro_core.models.reward import HeadRewardModel
from faro_core.models.threads import THREADS_ENV, kept_threads
from faro_core.store.runs import Heartbeat, Run, RunStore
from faro_core.train import methods
from faro_core.train.backends import HeadBackend, split_rewards, unstack_rewards
from faro_core.train.checkpoint import save_checkpoints
from faro_core.train.config import FaroConfig, fields_where
from faro_core.train.inputs import TrainInputs, split_indices
from faro_core.train.loop import RunLoop, final_rewards, prepare_run, write_final, write_run_inputs
from faro_core.train.outputs import data_record, gold_labels
from faro_core.train.selection import IterateSelector, chance_p_values, within_chance
from faro_core.train.stepper import make_adam

# Config fields that members of one batch must share: the data and features (one feature table), the head's
# shape (one stack), the optimizer's settings (one Adam over the stack) and the step schedule (lockstep). Each
# field says so itself (``batch=True`` in faro_core/train/config.py).
BATCH_KEYS = fields_where("batch", True)
DEFAULT_MEMORY_MB = 2048  # host memory the members of one batch may take (docs/TRAINING.md)
# What the last batch of this process shared (read by bench/sweep_engine.py and the tests): members, the slots
# they started in, and the member-steps against the slot-steps actually computed.
LAST_BATCH: dict[str, Any] = {}
_STEPPING = "stepping"  # in a step's memo (``scored``): the next step runs while this one is booked
CANCEL_POLL_S = 0.5
PROGRESS_FILE_S = 0.05  # a member's progress.json is rewritten at most every max(0.5, this x members) seconds
# relative cost of a slot's step by its first constraint's kind, for spreading slots over threads (only the
# balance depends on it): measured on BBQ Religion, one thread, a CF step (twins: twice the rows) and a
# DP/EO(role) step (the item terms' bookkeeping) cost about the same, 4.4-4.8 ms; a BT step less
_KIND_COST = {"bt": 0.65, "cf": 1.0, "dp": 1.0, "eo": 0.95}


def batchable(config: FaroConfig) -> bool:
    """Can ``config`` train as a member of a batch? Head mode, a method whose registry entry trains in the
    loop and says it batches, and no weight averaging (its running average is one more copy per member,
    not built)."""
    cfg = config.resolved()
    method = methods.get(methods.method_of(cfg.to_dict()))
    return cfg.mode == "head" and method.fit is None and method.batches and not cfg.average


def batch_key(config: FaroConfig) -> tuple[str, ...]:
    """Configs with equal keys can train in one batch (:data:`BATCH_KEYS`)."""
    cfg = config.resolved()
    return tuple(repr(getattr(cfg, k)) for k in BATCH_KEYS)


def member_bytes(n_pairs: int, in_dim: int, hidden: int, batch_rows: int) -> int:
    """Host memory one member adds to a batch, in bytes (an estimate, checked against measured peaks in
    ``bench/sweep_engine.py``): its weights four times over (weights, gradient, two Adam moments) plus the
    best iterate and a checkpoint's copy; its activations on a step's rows (pre-activation, activation and
    their gradients); its per-pair state ([N] multiplier coefficients, pair attributes, reward buffer)."""
    params = (hidden * (in_dim + 2) + 1) if hidden > 0 else in_dim + 1
    activations = batch_rows * max(hidden, 1) * 4
    per_pair = 100
    return 4 * (6 * params + activations) + per_pair * n_pairs


def plan_batches(configs: list[FaroConfig], memory_mb: float = DEFAULT_MEMORY_MB, n_pairs: int = 0,
                 in_dim: int = 384) -> tuple[list[list[FaroConfig]], list[FaroConfig]]:
    """(batches, serial): the batchable configs grouped by :func:`batch_key`, each group split into batches
    whose members fit in ``memory_mb`` (:func:`member_bytes`, at least one member per batch), and the
    configs that train alone. ``n_pairs`` / ``in_dim``: the data's pairs and feature width (for the
    estimate)."""
    groups: dict[tuple[str, ...], list[FaroConfig]] = {}
    serial = []
    for c in configs:
        if batchable(c):
            groups.setdefault(batch_key(c), []).append(c)
        else:
            serial.append(c)
    batches = []
    for members in groups.values():
        cfg = members[0].resolved()
        rows = 4 * cfg.batch_size + 4 * (cfg.constraint_batch_size or 0)
        size = max(1, int(memory_mb * 2**20 // member_bytes(n_pairs, in_dim, cfg.head_hidden, rows)))
        batches += [members[i:i + size] for i in range(0, len(members), size)]
    return batches, serial


# ---------------------------------------------------------------------------------------------------
# a member seen as one head and one optimizer (what the solo loop's checkpoints and selection use)
# ---------------------------------------------------------------------------------------------------
class _Stack:
    """The batch's heads, one per slot (a ``HeadRewardModel`` each, so a slot computes exactly what a solo
    run's model does), each with its own Adam (a solo run's optimizer), and which member sits in which slot."""

    def __init__(self, heads: list[torch.nn.Module], lr: float, weight_decay: float) -> None:
        self.lr, self.weight_decay = lr, weight_decay
        self.heads = list(heads)
        self.opts = [make_adam(h.parameters(), lr=lr, weight_decay=weight_decay) for h in self.heads]

    @classmethod
    def seeded(cls, in_dim: int, hidden: int, seeds: list[int], lr: float, weight_decay: float) -> _Stack:
        """Fresh heads, slot m initialized exactly as a solo run's ``HeadRewardModel(in_dim, hidden)`` right
        after ``torch.manual_seed(seeds[m])``."""
        heads = []
        for s in seeds:
            torch.manual_seed(int(s))
            heads.append(HeadRewardModel(in_dim, hidden))
        return cls(heads, lr, weight_decay)

    @property
    def n_members(self) -> int:
        return len(self.heads)

    def remap(self, keep: list[int]) -> None:
        """New slot j is old slot ``keep[j]``; a slot may appear twice (a fork: its later copies get copied
        weights and Adam state and go on separately) or not at all (dropped)."""
        heads, opts, seen = [], [], set()
        for k in keep:
            if k not in seen:
                seen.add(k)
                heads.append(self.heads[k])
                opts.append(self.opts[k])
                continue
            head = copy.deepcopy(self.heads[k])
            opt = make_adam(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            for p_old, p_new in zip(self.heads[k].parameters(), head.parameters()):
                st = self.opts[k].state.get(p_old)
                if st:
                    opt.state[p_new] = {name: v.clone() for name, v in st.items()}
            heads.append(head)
            opts.append(opt)
        self.heads, self.opts = heads, opts


class MemberHead(torch.nn.Module):
    """Member ``slot`` of a stack as one ``HeadRewardModel``: the slot's head (its forward, ``state_dict`` and
    ``load_state_dict``), followed through forks and drops."""

    def __init__(self, stack: _Stack, slot: int) -> None:
        super().__init__()
        self.stack, self.slot = stack, slot

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack.heads[self.slot](x)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self.stack.heads[self.slot].state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True, assign: bool = False) -> Any:
        return self.stack.heads[self.slot].load_state_dict(state)


class MemberAdam:
    """Member ``slot``'s optimizer: the slot's Adam (``state_dict`` / ``load_state_dict`` as a solo run's)."""

    def __init__(self, stack: _Stack, slot: int) -> None:
        self.stack, self.slot = stack, slot

    def state_dict(self) -> dict[str, Any]:
        return self.stack.opts[self.slot].state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.stack.opts[self.slot].load_state_dict(sd)


# Config fields that do not enter a member's primal steps while all its multipliers are 0: the epsilon enters
# only the dual step (and the penalty's constant lambda * eps, 0 while lambda is), the rest only what is
# reported or which iterate is returned. Members equal on every other field share their weights (one slot).
SHARE_FREE = ("epsilon", "name", "sweep", "select", "select_chance", "select_metric", "ckpt_every")


def share_key(member: Member) -> tuple[Any, ...] | None:
    """Members with equal keys, all multipliers 0 and the same start compute the same primal steps, bit for
    bit, so they train as one slot of the stack (exact sharing); None: this member never shares (a fixed or
    nonzero multiplier, an infinite epsilon, a training loss with state of its own, a reward buffer).

    The constraint kinds are not in the key, only what they change in a step while the multipliers are 0:
    the batch drawn and the rows scored (:func:`_draw_key`). Their penalty is exactly 0 then, and the step
    leaves it out (:meth:`TrainStepper.batch_loss`): DP and EO on the role attribute draw the same whole
    items, and their members share one path until a multiplier rises (CF scores twins: a path of its own)."""
    st = member.stepper
    if (st.gda.fixed is not None or st.pair_loss is not None or st.weights is not None or st.use_buffer
            or bool(st.gda.lam.any()) or not math.isfinite(member.config.epsilon)):
        return None
    d = member.config.to_dict()
    return (*((k, repr(v)) for k, v in sorted(d.items()) if k not in SHARE_FREE and k != "constraints"),
            ("draw", _draw_key(st)))


@dataclass
class Member:
    """One run of the batch: its config, run, per-run machinery (stepper, loop) and slot in the stack."""

    config: FaroConfig
    run: Run
    loop: RunLoop
    head: MemberHead
    selector: Any = None  # its IterateSelector (the engine's, with the memoized chance test)

    @property
    def stepper(self) -> Any:
        return self.loop.prep.stepper


# ---------------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------------
def train_batch(configs: list[FaroConfig], store: RunStore, run_ids: list[str], resume: bool = False,
                progress: bool = True, inputs: TrainInputs | None = None,
                on_member: Callable[[Run], None] | None = None,
                on_step: Callable[[str, dict[str, Any]], None] | None = None,
                cancel_poll_s: float = CANCEL_POLL_S) -> list[Run]:
    """Train the members ``configs`` (one :func:`batch_key`) as one batch; member i is run ``run_ids[i]``.

    ``resume=True``: members whose run exists continue from their checkpoints (all must be at the same step:
    the caller groups them, see :func:`faro_core.studies.sweep.run_batch_job`); a done member is returned as
    is. Returns the members' runs (done, or failed / interrupted where that member failed or was cancelled);
    ``on_member`` is called with each run as it finishes, ``on_step(run_id, row)`` with every history row.
    Cancel requests are looked for every ``cancel_poll_s`` seconds (0: after every step). ``inputs``: where
    data and features come from (as for :func:`~faro_core.train.loop.train`).
    """
    inputs = inputs or TrainInputs()
    store.root.mkdir(parents=True, exist_ok=True)
    with one_sync(store.root):  # the members' first files: one sync for all of them
        runs, todo = _create_members(configs, store, run_ids, resume)
    if not todo:
        return runs
    keys = {batch_key(c) for c, _ in todo}
    if len(keys) > 1 or not all(batchable(c) for c, _ in todo):
        raise FaroError("train_batch: the members must be batchable head-mode configs with one batch key")
    with one_sync(store.root):
        for _, run in todo:
            run.set_status("running", world_size=1, batch=[r.run_id for _, r in todo])
    members: list[Member] = []
    try:
        with kept_threads(), Heartbeat(*[r for _, r in todo]):  # the caller's thread count comes back
            _fit_batch(todo, resume, progress, inputs, members, on_member, on_step, cancel_poll_s, store.root)
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        for _, run in todo:
            if run.raw_status().get("status") == "running":
                run.set_status("interrupted" if interrupted else "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return runs


def _create_members(configs: list[FaroConfig], store: RunStore, run_ids: list[str], resume: bool
                    ) -> tuple[list[Run], list[tuple[FaroConfig, Run]]]:
    """(every member's run, the (config, run) of those left to train): runs created, or with ``resume``
    reopened (a done one is left as it is)."""
    runs, todo = [], []
    for cfg, rid in zip(configs, run_ids):
        if resume and store.has(rid):
            run = store.get(rid)
            if run.status == "done":
                runs.append(run)
                continue
            cfg = FaroConfig.from_dict(run.config)
            run.clear_cancel()
        else:
            cfg = cfg.resolved()
            run = store.create(cfg.stored_dict(), run_id=rid)
        runs.append(run)
        todo.append((cfg, run))
    return runs, todo


def _fit_batch(todo: list[tuple[FaroConfig, Run]], resume: bool, progress: bool, inputs: TrainInputs,
               members: list[Member], on_member: Callable[[Run], None] | None,
               on_step: Callable[[str, dict[str, Any]], None] | None, cancel_poll_s: float, root: Path) -> None:
    first = todo[0][0]
    # as a solo head-mode run (see _prepare): the members' products are small; encoding uses every idle core
    torch.set_num_threads(1)
    data, df, index = inputs.load(first)
    backend = HeadBackend(first, df, progress, feature_cache=inputs.feature_cache)
    stack = _Stack.seeded(int(backend.meta["in_dim"]), first.head_hidden, [c.seed for c, _ in todo],
                          lr=first.lr, weight_decay=first.weight_decay)
    split_idx = split_indices(df)
    if len(split_idx["train"]) == 0:
        raise FaroError("the training split is empty")
    shared = (data, df, index, PairTensors.from_frame(df, index), split_idx, backend)
    record = data_record(data, split_idx, backend)  # data.json: the same for every member
    with one_sync(root):
        for slot, (cfg, run) in enumerate(todo):
            head = MemberHead(stack, slot)
            try:
                prep = prepare_run(cfg, *shared, model=head, opt=MemberAdam(stack, slot))
            except FaroError as exc:  # e.g. a constraint with nothing to compare: this member fails, not the batch
                run.set_status("failed", error=f"{type(exc).__name__}: {exc}")
                continue
            write_run_inputs(run, prep, record)
            hook = (lambda row, rid=run.run_id: on_step(rid, row)) if on_step else None
            members.append(Member(cfg, run, RunLoop(cfg, run, prep, resume=resume, on_step=hook), head))
    if not members:
        return
    pairs_of: dict[int, Any] = {}  # one object for the equal pair attributes of members on one data set (their
    for m in members:  # dual players then share coefficients where their multipliers are equal)
        gda = m.stepper.gda
        if gda.pairs is not None:
            gda.pairs = pairs_of.setdefault(id(m.stepper.tens), gda.pairs)
    starts = {m.loop.step for m in members}
    if len(starts) > 1:
        raise FaroError(f"members resumed in one batch must share their checkpoint step, got {sorted(starts)}")
    step = starts.pop()
    slots = [m.head.slot for m in members]
    if step == 0:  # fresh members with one share key are one path until a multiplier leaves 0 (then: fork)
        first_of: dict[Any, int] = {}
        for i, m in enumerate(members):
            key = share_key(m)
            slots[i] = slots[first_of.setdefault(key, i)] if key is not None else slots[i]
    if len(members) < len(todo) or len(set(slots)) < len(slots):
        _keep(stack, members, slots)
    total = members[0].loop.total
    for m in members:
        m.stepper.prepare()
    for h in stack.heads:
        h.train()
    bar = tqdm(total=total, initial=step, desc=f"batch of {len(members)}", unit="step", disable=not progress,
               file=sys.stderr)
    last_poll = time.monotonic()
    scored: dict[Any, Any] = {}
    golds: dict[str, torch.Tensor] = {}
    snapshots: dict[int, dict[str, torch.Tensor]] = {}  # each slot's weights at this evaluation
    ckpts: list[tuple[Any, ...]] = []  # the members' checkpoints of this step, written together
    n_threads = batch_threads(len(members))  # slots fork as training goes: up to one per member
    for m in members:  # a member's validation pass is scored (and tested against chance) once per slot and step
        m.loop.score = _memo_score(m, scored)
        m.loop.metrics = _memo_metrics(m, scored, golds)
        if n_threads > 1:  # the selected weights: the slot's copy taken by _score_validation
            m.loop.snapshot = (lambda m=m: snapshots[m.head.slot])
        m.selector = IterateSelector(m.config, m.stepper.constraints, m.loop.prep.index,
                                     chance_test=_memo_chance(m, scored))
        m.loop.better = m.selector.better
        m.loop.checkpoint = ckpts.append
        # every member's progress.json, every 0.5 s, was ~4% of a 30-member batch: one file per member and ~50 ms
        m.loop.progress_every = max(0.5, PROGRESS_FILE_S * len(members))
    LAST_BATCH.clear()
    LAST_BATCH.update(members=len(members), start_slots=stack.n_members, member_steps=0, slot_steps=0,
                      dual_passes=0, by_kind={})
    LAST_BATCH["threads"] = n_threads
    pool = ThreadPoolExecutor(n_threads, thread_name_prefix="faro-batch", initializer=_worker_init) \
        if n_threads > 1 else None
    try:
        flight = None  # the next step, when it runs in the pool while the members book this one
        while step < total and members:
            scored.clear()
            outs = _collect_step(stack, flight or _submit_step(stack, backend, members, step, pool))
            step += 1
            loop0 = members[0].loop  # eval_every and total are batch keys: every member evaluates together
            scoring = {}  # each slot's validation scoring (and copy of its weights), in the pool
            if pool is not None and (step % loop0.eval_every == 0 or step == loop0.total):
                scoring = _score_validation(members, scored, snapshots, pool)
            rows = [m.loop.log_step(out) for m, out in zip(members, outs)]  # before a dual step moves lambda
            poll = time.monotonic() - last_poll >= cancel_poll_s
            flight = None
            if pool is not None and not poll and step < total and _quiet_after(members, step):
                # each slot steps once its validation pass and weights' copy are taken: the booking below reads
                # those, the rows above and the members' settings, none of which the step writes
                flight = _submit_step(stack, backend, members, step, pool, after=scoring)
                scored[_STEPPING] = True
            if scoring:
                _measure_validation(members, scored, scoring, None if flight is not None else pool)
            for m, row in zip(members, rows):
                m.loop.book_step(row)
            snapshots.clear()  # the members that selected this iterate hold their slot's copy; free the rest now
            if ckpts:
                save_checkpoints(ckpts, pool)
                ckpts.clear()
            if poll:
                last_poll = time.monotonic()
                cancelled = [m for m in members if m.run.cancel_requested()]
                if cancelled:
                    for m in cancelled:
                        m.loop.flush()
                        m.run.set_status("interrupted", error="cancelled by the user")
                        m.run.clear_cancel()
                    members[:] = [m for m in members if m not in cancelled]
                    _keep(stack, members, [m.head.slot for m in members])
            bar.update(1)
        bar.close()
        scored.clear()
        with one_sync(root):  # every member's files, then one sync, then the statuses that say they are done
            finished = _finish_members(stack, members, pool)
    finally:
        if pool is not None:
            pool.shutdown()
    with one_sync(root):
        for m in finished:
            m.run.set_status("done")
    for m in finished:
        if on_member:
            on_member(m.run)


def _finish_members(stack: _Stack, members: list[Member], pool: ThreadPoolExecutor | None) -> list[Member]:
    """Every member's :meth:`RunLoop.finish` (score every pair with its selected iterate, measure every split,
    write its files); returns the members that finished (one that failed is marked ``failed``, and the others
    go on). Each distinct selected iterate gets a model of its own (members of one slot share the slot's head,
    so they cannot each load theirs into it) and is scored once, in the pool's threads; the measuring (many
    small operations that hold the GIL) runs here as each iterate's scores arrive, the first member of each
    iterate first so that the others find its metrics in the shared memo; every member's files are written in
    the pool while the next is measured."""
    models: dict[bytes, torch.nn.Module] = {}
    model_of: list[torch.nn.Module] = []
    for m in members:
        head = stack.heads[m.head.slot]
        state = m.loop.best_state if m.loop.best_state is not None else head.state_dict()
        key = hashlib.sha1(b"".join(t.detach().contiguous().numpy().tobytes() for t in state.values())).digest()
        if key not in models:
            model = models[key] = copy.deepcopy(head)
            model.load_state_dict(state)
        model_of.append(models[key])
    memo: dict[Any, Any] = {}  # scores and metrics of equal final rewards (members that selected one iterate)

    def failed(m: Member, exc: Exception) -> None:
        m.run.set_status("failed", error=f"{type(exc).__name__}: {exc}")

    def outputs(i: int) -> Any:
        try:
            return members[i].loop.final_outputs(memo, model=model_of[i])
        except Exception as exc:  # noqa: BLE001 -- one member's failure must not lose the others
            failed(members[i], exc)
            return None

    def write(i: int, out: Any) -> Member | None:
        m = members[i]
        try:
            with joined_sync():  # the caller's one_sync block makes these writes durable
                write_final(m.config, m.run, out, memo)
        except Exception as exc:  # noqa: BLE001 -- one member's failure to write must not lose the others
            failed(m, exc)
            return None
        return m

    first: dict[int, int] = {}
    for i, model in enumerate(model_of):
        first.setdefault(id(model), i)
    lead_set = set(first.values())
    leads, rest = sorted(lead_set), [i for i in range(len(members)) if i not in lead_set]
    done: dict[int, Member | None] = {}
    if pool is None:
        for i in leads + rest:
            out = outputs(i)
            done[i] = write(i, out) if out is not None else None
        return [m for _, m in sorted(done.items()) if m is not None]

    def score(i: int) -> int:
        prep = members[i].loop.prep
        try:
            final_rewards(prep.backend, model_of[i], len(prep.df), memo)
        except Exception:  # noqa: BLE001 -- outputs(i) meets the error again and fails that member alone
            pass
        return i

    writes: dict[int, Any] = {}
    arrived = (future.result() for future in as_completed([pool.submit(score, i) for i in leads]))
    for i in itertools.chain(arrived, rest):  # each lead as its scores arrive, then the others
        out = outputs(i)
        if out is None:
            done[i] = None
        else:
            writes[i] = pool.submit(write, i, out)
    done.update({i: f.result() for i, f in writes.items()})
    return [m for _, m in sorted(done.items()) if m is not None]


def _keep(stack: _Stack, members: list[Member], slots: list[int]) -> None:
    """Remap the stack to the members' ``slots`` (old slot of each member, in order; members that share a
    slot keep sharing one) and renumber the members."""
    order = list(dict.fromkeys(slots))
    new_of = {old: new for new, old in enumerate(order)}
    stack.remap(order)
    for m, old in zip(members, slots):
        m.head.slot = new_of[old]
        m.stepper.opt.slot = new_of[old]


def _fork(stack: _Stack, members: list[Member]) -> None:
    """After a dual step: a member that shares its slot and whose multipliers left 0 gets a slot of its own
    (a copy of the shared weights and Adam state), so it goes on as its solo run would."""
    by_slot: dict[int, list[Member]] = {}
    for m in members:
        by_slot.setdefault(m.head.slot, []).append(m)
    leaving = []
    for group in by_slot.values():
        if len(group) < 2:
            continue
        moved = [m for m in group if bool(m.stepper.gda.lam.any())]
        if len(moved) == len(group):  # all of them left 0: the first keeps the slot
            moved = moved[1:]
        leaving += moved
    if not leaving:
        return
    n = stack.n_members
    keep = list(range(n)) + [m.head.slot for m in leaving]
    stack.remap(keep)
    for i, m in enumerate(leaving):
        m.head.slot = m.stepper.opt.slot = n + i


def _memo_metrics(member: Member, scored: dict[tuple[Any, ...], Any], golds: dict[str, torch.Tensor]
                  ) -> Callable[[Any, Any, torch.Tensor], Any]:
    """``RunLoop.metrics`` for a member: ``split_metrics`` once per slot, split and constraints (members of a
    slot differ at most in their constraint kinds and ``SHARE_FREE`` settings, of which only epsilon enters
    it), with ``max_excess`` and ``feasible``
    recomputed from the slot's strict violations against this member's epsilons (the same formula). ``golds``:
    the batch's gold labels by split (its members share the data), filled on first use."""
    def metrics(split: str, batch: Any, idx: torch.Tensor) -> dict[str, Any]:
        prep = member.loop.prep
        constraints = prep.stepper.constraints
        key = (member.head.slot, split, "metrics", tuple(constraints.names()))
        if key not in scored:
            g = constraints.strict(batch) if constraints else None
            gold = golds.get(split)
            if gold is None or len(gold) != len(idx):  # a split's pairs are fixed: its gold labels, once
                gold = golds[split] = gold_labels(prep.df, prep.tens, idx)
            scored[key] = (split_metrics(batch, constraints, prep.measure, gold, strict=g), g)
        base, g = scored[key]
        out = {**base, "violation": dict(base["violation"])}
        if g is not None:
            out["max_excess"] = float((g - constraints.epsilons()).max())
            out["feasible"] = bool((g <= constraints.epsilons() + 1e-9).all())
        return out

    return metrics


def _memo_chance(member: Member, scored: dict[tuple[Any, ...], Any]) -> Callable[..., bool]:
    """The chance tier's test for a member (:func:`~faro_core.train.selection.within_chance`) with its p-values
    computed once per slot, kinds, seed and ``min_count`` in a step (they depend on nothing else)."""
    def p_values(batch: Any, kinds: tuple[str, ...], index: Any, config: FaroConfig) -> dict[str, float]:
        key = (member.head.slot, "chance", kinds, config.seed, config.min_count)
        if key not in scored:
            scored[key] = chance_p_values(batch, kinds, index, config)
        return scored[key]

    def test(batch: Any, constraints: Any, index: Any, config: FaroConfig) -> bool:
        return within_chance(batch, constraints, index, config, p_values=p_values)

    return test


def _score_validation(members: list[Member], scored: dict[Any, Any], snapshots: dict[int, dict[str, torch.Tensor]],
                      pool: ThreadPoolExecutor) -> dict[int, Future[Member]]:
    """Score every slot's validation pairs in the pool's threads, into ``scored`` under the key
    :func:`_memo_score` reads, and copy each slot's weights into ``snapshots`` (what a member that selects this
    iterate keeps: one copy per slot instead of one per member). Returns each slot's task: the slot's next
    step may run once its task is done (:func:`_submit_step`'s ``after``)."""
    reps: dict[int, Member] = {}
    for m in members:
        reps.setdefault(m.head.slot, m)
    snapshots.clear()

    def score(m: Member) -> Member:  # the products, out of the GIL; what _memo_score would compute
        prep = m.loop.prep
        scored[(m.head.slot, "val")] = split_rewards(prep.backend, m.head, prep.split_idx["val"])
        snapshots[m.head.slot] = copy.deepcopy(m.head.state_dict())
        return m

    return {slot: pool.submit(score, m) for slot, m in reps.items()}


def _measure_validation(members: list[Member], scored: dict[Any, Any], scoring: dict[int, Future[Member]],
                        pool: ThreadPoolExecutor | None) -> None:
    """The slot-level validation metrics of :func:`_score_validation`'s scores, here as each slot's scores
    arrive, into ``scored`` under the keys :func:`_memo_metrics` reads (the same values it would compute),
    then the chance tier's p-values that the members' selection will ask for (in ``pool``'s threads, or here
    while the pool runs the next step). The metrics are many small operations that hold the GIL: two threads
    computing them slowed each other down (12 ms per slot against 5.4 on one thread, BBQ Religion)."""
    for future in as_completed(scoring.values()):
        m = future.result()
        with torch.no_grad():
            m.loop.metrics("val", *_val_batch(m, scored))  # the memoized metrics (_memo_metrics)
    # the chance tier's p-values (the same condition as IterateSelector.better's, on the same metrics), once
    # per slot and kinds
    need: dict[tuple[Any, ...], Member] = {}
    for m in members:
        cfg, constraints = m.config, m.stepper.constraints
        if cfg.select == "last" or not constraints or cfg.select_chance <= 0:
            continue
        val = m.loop.metrics("val", *_val_batch(m, scored))
        ref, tier = m.loop.best, IterateSelector.tier
        if val["feasible"] or not (ref is None or tier(ref) == 0 or (tier(ref) == 1 and m.selector.fits_better(val, ref))):
            continue
        g, eps = scored[(m.head.slot, "val", "metrics", tuple(constraints.names()))][1], constraints.epsilons()
        missed = {k for k, gi, e in zip(constraints.kinds(), g.tolist(), eps.tolist()) if gi > e + 1e-9}
        if missed and missed <= set(PERMUTED_KINDS):
            need.setdefault((m.head.slot, "chance", tuple(sorted(missed)), cfg.seed, cfg.min_count), m)

    def chance(item: tuple[tuple[Any, ...], Member]) -> None:
        key, m = item
        scored[key] = chance_p_values(_val_batch(m, scored)[0], key[2], m.loop.prep.index, m.config)

    todo = [(k, m) for k, m in need.items() if k not in scored]
    list(pool.map(chance, todo) if pool is not None else map(chance, todo))


def _val_batch(m: Member, scored: dict[tuple[Any, ...], Any]) -> tuple[Any, torch.Tensor]:
    """(validation batch with the slot's rewards, its pair indices), as :meth:`RunLoop.evaluate` builds it."""
    prep = m.loop.prep
    idx = prep.split_idx["val"]
    return prep.tens.batch(idx, _memo_score(m, scored)("val", idx)), idx


def _memo_score(member: Member, scored: dict[tuple[Any, ...], Any]) -> Callable[[str, torch.Tensor], Any]:
    """``RunLoop.score`` for a member: its rewards on a split, computed once per slot (cleared every step)."""
    def score(split: str, idx: torch.Tensor) -> Any:
        key = (member.head.slot, split)
        if key not in scored:
            if scored.get(_STEPPING):  # the next step is changing the weights: they cannot be read now
                raise RuntimeError(f"slot {key[0]}'s {split} scores were not taken before its next step")
            scored[key] = split_rewards(member.loop.prep.backend, member.head, idx)
        return scored[key]

    return score


def _draw_key(st: Any) -> tuple[Any, ...]:
    """What :meth:`TrainStepper.draw` and the rows it scores depend on besides the step (members of one batch
    share data, split, batch size and schedule): slots with equal keys draw the same pairs every step."""
    return (st.config.seed, st.item_batches is not None, bool(st.constraints), st.cbs, st.bs_local,
            st.steps_per_epoch, st.need_twins)


def _slot_step(stack: _Stack, backend: HeadBackend, group: list[Member], step: int,
               draws: dict[tuple[Any, ...], Any] | None = None) -> tuple[Any, ...]:
    """Training step ``step`` of one slot, exactly as :meth:`TrainStepper.step` runs it for a solo run: the
    representative (``group[0]``) draws its batch, its head scores it, its loss, backward and Adam step, then
    every member of the slot takes its dual step when due (on the slot's one fresh pass). Returns (loss,
    Bradley-Terry loss, whether a fresh dual pass ran). Slots share nothing that this writes, so different
    slots run in different threads. ``draws``: the step's batches and gathered feature rows by
    :func:`_draw_key`, shared by the slots of this step (read-only; a slot that finds none adds its own)."""
    rep = group[0]
    slot, st = rep.head.slot, rep.stepper
    key = _draw_key(st)
    drawn = draws.get(key) if draws is not None else None
    if drawn is None:
        local, n_bt, n_pair = st.draw(step)
        rows, tw = backend.row_plan(local, with_twins=st.need_twins)
        drawn = (local, n_bt, n_pair, tw, backend.x_all.index_select(0, rows))
        if draws is not None:
            draws.setdefault(key, drawn)
    local, n_bt, n_pair, tw, x = drawn
    r = stack.heads[slot](x)
    rewards = tuple(t.float() for t in unstack_rewards(r, tw))
    loss, loss_bt = st.batch_loss(local, n_bt, n_pair, rewards)
    opt = stack.opts[slot]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    rw = None
    leads: dict[tuple[str, ...], Any] = {}  # by constraints: the first member's statistics are its mates' too
    for m in group:
        st = m.stepper
        if st.dual_due(step):
            if st.exact_dual and rw is None:  # the fresh pass, once per slot
                rw = st.dual_rewards()
            names = tuple(st.constraints.names())
            st.dual_step(rewards=rw if st.exact_dual else None, like=leads.get(names))
            if st.exact_dual:
                leads.setdefault(names, st)
    return loss, loss_bt, rw is not None


def _worker_init() -> None:
    torch.set_num_threads(1)  # each slot's products on one thread, as a solo head-mode run's


def batch_threads(n_slots: int) -> int:
    """Threads that step a batch's slots in parallel: ``$FARO_TORCH_THREADS`` if set, else the machine's cores,
    at most one per slot (each thread runs its slots' products on one torch thread, so a slot's arithmetic
    is the same whichever thread runs it)."""
    env = os.environ.get(THREADS_ENV)
    n = max(1, int(env)) if env else (os.cpu_count() or 1)
    return max(1, min(n, n_slots))


@dataclass
class _StepInFlight:
    """A batched step submitted to the pool (:func:`_submit_step`), collected by :func:`_collect_step`."""

    step: int
    members: list[Member]
    kind: list[str]
    results: list[Any]
    futures: list[Any]


def _submit_step(stack: _Stack, backend: HeadBackend, members: list[Member], step: int,
                 pool: ThreadPoolExecutor | None, after: dict[int, Future[Any]] | None = None) -> _StepInFlight:
    """Start training step ``step`` of every member: each slot's step (:func:`_slot_step`), the slots spread over
    the pool's threads (each thread a share of the slots, balanced by their kinds' costs); without a pool (or
    with one slot) the step runs here. ``after``: a task per slot (submitted to the pool before this step, so
    that a thread never waits on a task queued behind it) that must finish before that slot steps."""
    # one representative per slot steps it (members of a slot compute the same step, bit for bit); every slot
    # of the stack has one (the engine drops emptied slots)
    groups: dict[int, list[Member]] = {}
    for m in members:
        groups.setdefault(m.head.slot, []).append(m)
    order = [groups[k] for k in range(stack.n_members)]
    kind = [",".join(g[0].config.active_constraints) or "bt" for g in order]
    for k in kind:  # the slot-steps computed, by the constraints that shape their rows (bench/sweep_engine.py)
        LAST_BATCH.setdefault("by_kind", {}).setdefault(k, {"steps": 0, "dual": 0})["steps"] += 1
    LAST_BATCH["member_steps"] = LAST_BATCH.get("member_steps", 0) + len(members)
    LAST_BATCH["slot_steps"] = LAST_BATCH.get("slot_steps", 0) + stack.n_members
    n_workers = pool._max_workers if pool is not None else 1  # noqa: SLF001 -- the pool's size, as built
    draws: dict[tuple[Any, ...], Any] = {}  # this step's batches, drawn once per _draw_key
    flight = _StepInFlight(step, list(members), kind, [None] * len(order), [])
    if pool is None or n_workers < 2 or len(order) < 2:
        flight.results = [_slot_step(stack, backend, g, step, draws) for g in order]
        return flight
    # longest first onto the least loaded thread; a slot's cost ~ its kind's (CF twins, role items)
    cost = [(_KIND_COST.get(k.split(",")[0], 1.0), i) for i, k in enumerate(kind)]
    shares: list[list[int]] = [[] for _ in range(n_workers)]
    load = [0.0] * n_workers
    for c, i in sorted(cost, reverse=True):
        w = load.index(min(load))
        shares[w].append(i)
        load[w] += c
    waits = after or {}

    def share(ids: list[int]) -> list[tuple[int, Any]]:
        out = []
        for i in ids:
            if i in waits:
                waits[i].result()
            out.append((i, _slot_step(stack, backend, order[i], step, draws)))
        return out

    flight.futures = [pool.submit(share, ids) for ids in shares if ids]
    return flight


def _collect_step(stack: _Stack, flight: _StepInFlight) -> list[dict[str, Any]]:
    """Wait for a submitted step, then the forks. Returns each member's step record (as
    :meth:`TrainStepper.step` does)."""
    for f in flight.futures:
        for i, res in f.result():
            flight.results[i] = res
    step, members = flight.step, flight.members
    for k, res in zip(flight.kind, flight.results):
        if res[2]:
            LAST_BATCH["dual_passes"] = LAST_BATCH.get("dual_passes", 0) + 1
            LAST_BATCH["by_kind"][k]["dual"] += 1
    # each slot's losses read once (a CPU tensor's value; the solo loop keeps tensors until its rows are written)
    losses = torch.stack([t.detach() for res in flight.results for t in res[:2]]).tolist()
    outs = []
    for m in members:
        loss, loss_bt = losses[2 * m.head.slot], losses[2 * m.head.slot + 1]
        outs.append({"step": step + 1, "epoch": step // m.stepper.steps_per_epoch, "loss": loss,
                     "loss_bt": loss_bt, "dual": m.stepper.dual_due(step)})
    if any(o["dual"] for o in outs):
        _fork(stack, members)
    return outs


def _quiet_after(members: list[Member], step: int) -> bool:
    """Can step ``step`` (0-based) run while the members book the step before it? Yes when booking that step
    reads nothing the next one writes: the history rows are taken before (they read the multipliers), an
    evaluation reads the scores and weights' copy taken before (:func:`_score_validation`), so what remains
    is a checkpoint, which reads the weights, optimizer and multipliers: no member may checkpoint after it."""
    if step >= members[0].loop.total:  # total is a batch key
        return False
    for m in members:
        every = m.config.ckpt_every
        if every and step % every == 0:
            return False
    return True
