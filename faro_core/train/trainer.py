"""The Faro trainer: Bradley-Terry reward model under DP / EO / CF constraints (DESIGN §3-§5).

``train(config, store)`` loads and splits the data, builds the reward model (head or full mode), runs
ProxyGDA (or a baseline variant on the same code path), selects the iterate on the validation split,
scores every pair of every split and writes the run (see :mod:`faro_core.runs`). It checkpoints every
``ckpt_every`` steps; ``resume=True`` continues from the last checkpoint to the same result as an
uninterrupted run (data order depends only on (seed, epoch), and all state is checkpointed).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from faro_core.constraints import ConstraintSet, GroupIndex, PairBatch, all_constraints, cf_flip_rate
from faro_core.errors import FaroError
from faro_core.fairness.role import ITEM_TERMS
from faro_core.io import read_json, write_json, write_parquet, write_safetensors
from faro_core.runs import Heartbeat, Run, RunStore
from faro_core.train.config import FaroConfig
from faro_core.train.proxy_gda import ProxyGDA, bt_loss

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------------
# data -> tensors
# ---------------------------------------------------------------------------------------------------
def load_training_data(config: FaroConfig) -> tuple[Any, pd.DataFrame, GroupIndex]:
    """(PreferenceData, frame with a ``split`` column, GroupIndex) for a config."""
    from faro_core.data import load
    from faro_core.data.splits import split_by_item
    from faro_core.train.config import default_attribute

    data = load(config.data, format=config.format, group=config.group, strata=config.strata,
                skew=config.skew, seed=config.data_seed, groups=config.groups)
    attribute = config.attribute or default_attribute(config.data, config.format, config.role_columns)
    if attribute == "role":
        from faro_core.fairness.role import add_role_columns, role_strata

        data.df = add_role_columns(data.df, config.role_columns, name=data.name)
        if config.strata is None:
            data.strata = role_strata(data.strata)
    parts = split_by_item(data, config.val_frac, config.test_frac, seed=config.data_seed)
    frames = [p.df.assign(split=name) for name, p in parts.items() if len(p.df)]
    df = pd.concat(frames, ignore_index=True)
    strata_cols = list(data.strata)
    df["stratum"] = _stratum_labels(df, strata_cols)
    resp = sorted(set(df["chosen_group"].dropna()) | set(df["rejected_group"].dropna()))
    strata = sorted(df["stratum"].unique())
    index = GroupIndex(response_groups=resp, pair_groups=sorted(set(df["group"].dropna())), strata=strata,
                       dp_strata=dp_strata_in_scope(df, strata_cols, config.dp_scope),
                       dp_partner=bool(config.dp_partner), attribute=attribute)
    return data, df, index


def default_dp_scope(strata_cols: list[str]) -> str:
    """The scope DP holds in when the config leaves it open: BBQ-style data (a ``context_condition``
    stratum) -> ambiguous contexts only (why: :class:`~faro_core.constraints.DemographicParity`); else all."""
    return "context_condition=ambig" if "context_condition" in strata_cols else "all"


def dp_strata_in_scope(df: pd.DataFrame, strata_cols: list[str], scope: str | None) -> list[str] | None:
    """Stratum labels DP applies to, from a scope ``"COLUMN=V1|V2"`` (``"all"``: every stratum -> None).

    The column must be one of the strata columns, so a stratum is either wholly in scope or wholly out.
    """
    scope = default_dp_scope(strata_cols) if scope is None else scope.strip()
    if scope in ("", "all"):
        return None
    col, sep, vals = scope.partition("=")
    col = col.strip()
    if not sep or not col or not vals.strip():
        raise FaroError(f"--dp-scope {scope!r}: expected COLUMN=VALUE[|VALUE…] or 'all'")
    if col not in strata_cols:
        raise FaroError(f"--dp-scope column {col!r} is not a strata column (strata: {', '.join(strata_cols) or 'none'});"
                        f" add it with --strata")
    wanted = {v.strip() for v in vals.split("|") if v.strip()}
    present = set(df[col].astype(str))
    if not wanted & present:
        raise FaroError(f"--dp-scope {scope!r}: no row has {col} in {sorted(wanted)} "
                        f"(values: {', '.join(sorted(present)[:10])})")
    return sorted(df.loc[df[col].astype(str).isin(wanted), "stratum"].unique())


def _stratum_labels(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    if not cols:
        return pd.Series(["all"] * len(df), index=df.index)
    return df[cols].astype(str).agg(",".join, axis=1)


def order_bits(pair_ids: pd.Series) -> np.ndarray:
    """A fixed random bit per pair (from its id): EO's random presentation order."""
    return np.array([hashlib.sha1(p.encode()).digest()[0] & 1 for p in pair_ids], dtype=np.int64)


@dataclass
class PairTensors:
    """Attributes of N pairs as tensors (all shape [N])."""

    chosen_group: torch.Tensor
    rejected_group: torch.Tensor
    group: torch.Tensor
    stratum: torch.Tensor
    label: torch.Tensor
    order: torch.Tensor
    has_twin: torch.Tensor
    role_item: torch.Tensor | None = None  # role codes (--attribute role): see faro_core.fairness.role
    chosen_role: torch.Tensor | None = None
    rejected_role: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PairTensors:
        """A copy on ``device`` (kept, so later batches do not copy again)."""
        key = str(device)
        cache = self.__dict__.setdefault("_on", {})
        if key not in cache:
            cache[key] = PairTensors(**{k: v.to(device) for k, v in self.__dict__.items() if torch.is_tensor(v)})
        return cache[key]

    @classmethod
    def from_frame(cls, df: pd.DataFrame, index: GroupIndex) -> PairTensors:
        def codes(col: pd.Series, vocab: list[str]) -> torch.Tensor:
            pos = {v: i for i, v in enumerate(vocab)}
            return torch.tensor([pos.get(v, -1) if v is not None else -1 for v in col], dtype=torch.long)

        has_gold = df["gold"].notna().any()
        label = df["gold"].to_numpy(dtype=float) if has_gold else np.ones(len(df))
        twin = df["cf_chosen"].notna() & df["cf_rejected"].notna()
        if "cf_prompt" in df:
            twin &= df["cf_prompt"].notna()
        role: dict[str, torch.Tensor] = {}
        if index.attribute == "role":
            from faro_core.fairness.role import role_codes

            role = dict(zip(("role_item", "chosen_role", "rejected_role"), role_codes(df)))
        return cls(
            **role,
            chosen_group=codes(df["chosen_group"], index.response_groups),
            rejected_group=codes(df["rejected_group"], index.response_groups),
            group=codes(df["group"], index.pair_groups),
            stratum=codes(df["stratum"], index.strata).clamp_min(0),
            label=torch.tensor(label, dtype=torch.float32),
            order=torch.from_numpy(order_bits(df["pair_id"])),
            has_twin=torch.tensor(twin.to_numpy(), dtype=torch.bool),
        )

    def batch(self, idx: torch.Tensor, rewards: tuple[torch.Tensor, ...]) -> PairBatch:
        r_c, r_r, cf_c, cf_r = rewards
        if r_c.device != self.group.device:  # full mode on a GPU: attributes follow the rewards
            return self.to(r_c.device).batch(idx, rewards)
        role = (() if self.role_item is None else
                (self.role_item[idx], self.chosen_role[idx], self.rejected_role[idx]))
        return PairBatch(r_c, r_r, self.chosen_group[idx], self.rejected_group[idx], self.group[idx],
                         self.stratum[idx], self.label[idx], self.order[idx], cf_c, cf_r, *role)


# ---------------------------------------------------------------------------------------------------
# backends: how rewards of a batch of pairs are computed
# ---------------------------------------------------------------------------------------------------
def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for a GPU goes through pinned memory, asynchronously.

    A copy from ordinary (pageable) host memory synchronizes the stream: the host waits for every queued
    kernel before it can launch the next step, and a MiniLM step on a GPU is host-bound, so each such copy
    costs the overlap of host and device. Pinned blocks come from PyTorch's caching host allocator, which
    keeps a block until its copy has completed.
    """
    device = torch.device(device)
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def make_adam(params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused implementation where PyTorch has one (CPU and CUDA float32): one kernel for the
    whole update instead of a loop of small ops. Same update up to float rounding; measured on a head step
    (MLP 384-256-1, 128 pairs, 1 thread): 2.12 ms -> 1.81 ms, the optimizer step 0.45 -> 0.21 ms. TRL's
    default (adamw_torch_fused) is fused too."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _unstack_rewards(r: torch.Tensor, twin: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(r_chosen [n], r_rejected [n], cf_chosen [n], cf_rejected [n]) from rewards stacked as chosen, rejected,
    then the twins of the ``twin`` [n] pairs (chosen, rejected); NaN where a pair has no twin."""
    n, k = len(twin), int(twin.sum())
    r_c, r_r = r[:n], r[n:2 * n]
    nan = torch.full_like(r_c, float("nan"))
    if k == 0:
        return r_c, r_r, nan, nan
    pos = (twin.nonzero().squeeze(1),)
    return r_c, r_r, nan.index_put(pos, r[2 * n:2 * n + k]), nan.clone().index_put(pos, r[2 * n + k:])


class HeadBackend:
    """Frozen backbone, cached features, trainable head."""

    def __init__(self, config: FaroConfig, df: pd.DataFrame, progress: bool) -> None:
        from faro_core.models.features import FeatureCache
        from faro_core.models.reward import HeadRewardModel

        self.cache = FeatureCache(config.backbone, max_length=config.max_length, progress=progress)
        twin = df["cf_chosen"].notna() & df["cf_rejected"].notna() & df["cf_prompt"].notna()
        prompts = list(df["prompt"]) * 2 + list(df.loc[twin, "cf_prompt"]) * 2
        responses = (list(df["chosen"]) + list(df["rejected"]) + list(df.loc[twin, "cf_chosen"])
                     + list(df.loc[twin, "cf_rejected"]))
        t0 = time.perf_counter()
        feats = torch.from_numpy(self.cache.encode(prompts, responses))
        self.feature_seconds = time.perf_counter() - t0
        self.encoded = self.cache.last_encoded
        n, k = len(df), int(twin.sum())
        d = feats.shape[1]
        tw = torch.from_numpy(twin.to_numpy().copy())
        x_cfc, x_cfr = torch.zeros(n, d), torch.zeros(n, d)
        x_cfc[tw], x_cfr[tw] = feats[2 * n:2 * n + k], feats[2 * n + k:]
        self._set_features(feats[:n], feats[n:2 * n], x_cfc, x_cfr, tw)
        torch.manual_seed(config.seed)
        self.model = HeadRewardModel(d, config.head_hidden)
        self.meta = {"mode": "head", "backbone": self.cache.backbone, "in_dim": int(d),
                     "hidden": config.head_hidden, "max_length": config.max_length}

    def _set_features(self, x_c: torch.Tensor, x_r: torch.Tensor, x_cfc: torch.Tensor, x_cfr: torch.Tensor,
                      has_twin: torch.Tensor) -> None:
        # chosen, rejected, twin-chosen, twin-rejected features in one [4n, d] table (zeros where a pair has no
        # twin), so a batch is one index_select: separate gathers and a cat cost ~0.3 ms of a ~2 ms step
        n, d = x_c.shape
        self.x_all = torch.cat([x_c, x_r, x_cfc, x_cfr])
        self.x_c, self.x_r, self.x_cfc, self.x_cfr = self.x_all.view(4, n, d).unbind(0)
        self.n_pairs, self.has_twin = n, has_twin
        self._plans: dict[bool, tuple[torch.Tensor, ...]] = {}  # unique_rewards' row maps

    @classmethod
    def from_features(cls, x_c: torch.Tensor, x_r: torch.Tensor, x_cfc: torch.Tensor, x_cfr: torch.Tensor,
                      has_twin: torch.Tensor, model: torch.nn.Module) -> HeadBackend:
        """A backend over given features ([n, d] each; twins' rows are read where ``has_twin`` [n] is True) and
        head, without a data set or feature cache: for benchmarks on synthetic features."""
        be = cls.__new__(cls)
        be._set_features(x_c, x_r, x_cfc, x_cfr, has_twin)
        be.model, be.feature_seconds, be.encoded = model, 0.0, 0
        be.meta = {"mode": "head", "in_dim": int(x_c.shape[1]), "hidden": getattr(model, "hidden", None)}
        return be

    def rewards(self, model: torch.nn.Module, idx: torch.Tensor, with_twins: bool = True) -> tuple[torch.Tensor, ...]:
        # One forward pass over chosen, rejected and twins: fewer calls, and DDP sees one forward per backward.
        n = self.n_pairs
        tw = self.has_twin[idx] if with_twins else torch.zeros(len(idx), dtype=torch.bool)
        sel = idx[tw]
        r = model(self.x_all.index_select(0, torch.cat([idx, idx + n, sel + 2 * n, sel + 3 * n])))
        return _unstack_rewards(r, tw)

    @torch.no_grad()
    def unique_rewards(self, model: torch.nn.Module, idx: torch.Tensor, with_twins: bool = True,
                       chunk: int = 4096) -> tuple[torch.Tensor, ...]:
        """What ``_split_rewards(self, model, idx)`` returns, scoring each distinct feature row once.

        A response shared by two pairs of an item (BBQ's "unknown", or the answer in both of its pairs) has one
        feature row: a quarter of BBQ's training rows are repeats, so the dual step's fresh pass costs 3/4.
        The row map is built once per ``idx`` tensor (``torch.unique``: ~0.1 s for BBQ's 29k rows).
        """
        plan = self._plans.get(with_twins)
        if plan is None or plan[0] is not idx:
            tw = self.has_twin[idx] if with_twins else torch.zeros(len(idx), dtype=torch.bool)
            sel = idx[tw]
            rows = torch.cat([self.x_c[idx], self.x_r[idx], self.x_cfc[sel], self.x_cfr[sel]])
            uniq, inv = torch.unique(rows, dim=0, return_inverse=True)
            plan = self._plans[with_twins] = (idx, uniq, inv, tw)
        _, uniq, inv, tw = plan
        was_training = model.training
        model.eval()
        r_u = torch.cat([model(uniq[i:i + chunk]) for i in range(0, len(uniq), chunk)]).float()
        model.train(was_training)
        return tuple(t.cpu() for t in _unstack_rewards(r_u[inv], tw))

    def export(self, run: Run, model: torch.nn.Module) -> None:
        write_safetensors(run.file("model.safetensors"), model.state_dict())


class FullBackend:
    """Backbone fine-tuned (bf16 autocast on a GPU). Texts are tokenized once up front; batches are padded
    dynamically to their own longest pair, which is where most of the speed over a naive loop comes from."""

    def __init__(self, config: FaroConfig, df: pd.DataFrame, progress: bool, device: str) -> None:
        from faro_core.models.features import resolve_backbone
        from faro_core.models.reward import load_sequence_classifier

        self.backbone = resolve_backbone(config.backbone)
        torch.manual_seed(config.seed)
        self.tok, self.model = load_sequence_classifier(self.backbone)
        self.device = device
        self.max_length = config.max_length
        self.feature_seconds, self.encoded = 0.0, 0

        def tokenize(prompts: list[str | None], responses: list[str | None]) -> list[list[int] | None]:
            ok = [i for i, (p, r) in enumerate(zip(prompts, responses)) if p is not None and r is not None]
            out: list[Any] = [None] * len(prompts)
            if not ok:  # e.g. data without counterfactual twins: the tokenizer rejects an empty batch
                return out
            enc = self.tok([prompts[i] for i in ok], [responses[i] for i in ok], truncation="longest_first",
                           max_length=self.max_length)
            for j, i in enumerate(ok):
                out[i] = {k: enc[k][j] for k in enc}
            return out

        self.enc_c = tokenize(list(df["prompt"]), list(df["chosen"]))
        self.enc_r = tokenize(list(df["prompt"]), list(df["rejected"]))
        self.enc_cfc = tokenize(list(df["cf_prompt"]), list(df["cf_chosen"]))
        self.enc_cfr = tokenize(list(df["cf_prompt"]), list(df["cf_rejected"]))
        self.meta = {"mode": "full", "backbone": self.backbone, "max_length": self.max_length}

    # Padded tokens per micro-batch on CPU (training; 4x that under no_grad). Measured on BBQ pairs, MiniLM,
    # batch 32, max length 128, 1 thread: one batch padded to its longest = 8,192 tokens for ~3,900 real
    # ones, 6.1 s CPU per forward+backward; length-sorted micro-batches of <= 1,024 padded tokens: 2.7 s.
    MICRO_TOKENS = 1024

    def _forward(self, model: torch.nn.Module, encs: list[dict[str, list[int]]]) -> torch.Tensor:
        from faro_core.models.reward import bucketed_rewards

        cuda = self.device.startswith("cuda")
        if not cuda and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            # CPU: compute scales with padded tokens, so run length-sorted micro-batches (same rewards up to
            # float rounding). DDP needs one forward per backward; a GPU keeps the single padded forward.
            budget = self.MICRO_TOKENS * (1 if torch.is_grad_enabled() else 4)
            return bucketed_rewards(model, self.tok, encs, self.device, budget)
        from faro_core.models.reward import pad_encodings

        batch = {k: to_device(v, self.device)
                 for k, v in pad_encodings(encs, self.tok.pad_token_id, self.tok.padding_side).items()}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=cuda):
            return model(**batch).logits.squeeze(-1).float()

    def rewards(self, model: torch.nn.Module, idx: torch.Tensor, with_twins: bool = True) -> tuple[torch.Tensor, ...]:
        ids = idx.tolist()
        # chosen and rejected in one forward pass: half the kernel launches, one padding
        both = self._forward(model, [self.enc_c[i] for i in ids] + [self.enc_r[i] for i in ids])
        r_c, r_r = both[: len(ids)], both[len(ids):]
        nan = torch.full_like(r_c, float("nan"))
        tw = [j for j, i in enumerate(ids) if self.enc_cfc[i] is not None and self.enc_cfr[i] is not None]
        if not with_twins or not tw:
            return r_c, r_r, nan, nan
        cf = self._forward(model, [self.enc_cfc[ids[j]] for j in tw] + [self.enc_cfr[ids[j]] for j in tw])
        pos = to_device(torch.tensor(tw), r_c.device)
        cf_c = nan.clone().index_put((pos,), cf[: len(tw)])
        cf_r = nan.clone().index_put((pos,), cf[len(tw):])
        return r_c, r_r, cf_c, cf_r

    def export(self, run: Run, model: torch.nn.Module) -> None:
        """A plain ``AutoModelForSequenceClassification`` directory (num_labels=1), safetensors."""
        import shutil
        import tempfile

        target = run.file("hf_model")
        tmp = tempfile.mkdtemp(prefix=".hf_model.", dir=run.path)
        model.save_pretrained(tmp, safe_serialization=True)
        self.tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)


# ---------------------------------------------------------------------------------------------------
# distributed helpers (accelerate launch / torchrun)
# ---------------------------------------------------------------------------------------------------
def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _maybe_init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    rank, world = _dist()
    if world > 1:
        t = t.clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


# ---------------------------------------------------------------------------------------------------
# evaluation of an iterate on a split
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def _split_rewards(backend: Any, model: torch.nn.Module, idx: torch.Tensor, chunk: int = 4096,
                   with_twins: bool = True) -> tuple[torch.Tensor, ...]:
    model.eval()
    parts = [backend.rewards(model, idx[i:i + chunk], with_twins) for i in range(0, len(idx), chunk)]
    model.train()
    return tuple(torch.cat([p[k] for p in parts]).float().cpu() for k in range(4))


def split_metrics(batch: PairBatch, constraints: ConstraintSet, measure: ConstraintSet,
                  gold: torch.Tensor) -> dict[str, Any]:
    """Accuracy (observed and gold), violations of every kind, feasibility of the trained constraints."""
    d = batch.r_chosen - batch.r_rejected
    out: dict[str, Any] = {"pairs": len(batch), "accuracy": float((d > 0).float().mean()),
                           "loss": float(bt_loss(batch.r_chosen, batch.r_rejected))}
    g_mask = ~torch.isnan(gold)
    if bool(g_mask.any()):
        correct = torch.where(gold[g_mask] == 1, d[g_mask] > 0, d[g_mask] < 0)
        out["gold_accuracy"] = float(correct.float().mean())
    vals = measure.strict(batch)
    viol = measure.max_by_kind(vals)
    stats = measure.cell_stats(batch, smooth=False)
    for c, s in zip(measure.constraints, stats):  # a kind with no estimable cell has no violation
        _, ok = c.disparities(s)
        if not bool(ok.any()):
            viol.pop(c.kind, None)
    out["violation"] = viol
    if constraints:
        g = constraints.strict(batch)
        out["max_excess"] = float((g - constraints.epsilons()).max())
        out["feasible"] = bool((g <= constraints.epsilons() + 1e-9).all())
    else:
        out["max_excess"], out["feasible"] = 0.0, True
    flip = cf_flip_rate(batch)
    if not math.isnan(flip):
        out["cf_flip_rate"] = flip
    return out


def _selected_by(best: dict[str, Any] | None, config: FaroConfig, constrained: bool) -> str:
    """How the returned iterate was chosen: last | unconstrained | feasible | chance | least_violating."""
    if config.select == "last" or best is None:
        return "last"
    if not constrained:
        return "unconstrained"
    return "feasible" if best.get("feasible") else "chance" if best.get("within_chance") else "least_violating"


VAL_LOG_KEYS = ("accuracy", "loss", "gold_accuracy", "violation", "feasible", "within_chance")
CHANCE_PERMUTATIONS = 50  # per validation pass of a run that is not feasible: ~0.04 s on BBQ's 3,116 pairs


def _within_chance(batch: PairBatch, constraints: ConstraintSet, index: GroupIndex, config: FaroConfig) -> bool:
    """True when every trained constraint that misses its epsilon on ``batch`` is DP or EO and its violation is
    indistinguishable from chance (group-permutation p-value >= ``config.select_chance``). With validation
    cells of a few dozen responses the largest gap of a reward that ignores the group is often above epsilon
    (BBQ: 0.09 against 0.05), and ranking such iterates by their violation ranks them by noise: on one BBQ seed
    "least violating" picked the first-epoch iterate (gold accuracy 0.62 against 0.82-0.83 for the others)."""
    from faro_core.evaluate.chance import PERMUTED_KINDS, chance_violation

    g, eps = constraints.strict(batch), constraints.epsilons()
    missed = {k for k, gi, e in zip(constraints.kinds(), g.tolist(), eps.tolist()) if gi > e + 1e-9}
    if not missed or not missed <= set(PERMUTED_KINDS):
        return False
    if index.attribute == "role":
        from faro_core.evaluate.chance import role_chance
        from faro_core.fairness.role import batch_role_items

        res = role_chance(batch_role_items(batch, index), kinds=sorted(missed), n_perm=CHANCE_PERMUTATIONS,
                          seed=config.seed, strata=("stratum",))
        return all(r["p_value"] >= config.select_chance for r in res.values())
    res = chance_violation(batch, index, kinds=sorted(missed), min_count=config.min_count,
                           n_perm=CHANCE_PERMUTATIONS, seed=config.seed)
    return all(r["p_value"] >= config.select_chance for r in res.values())


class IterateSelector:
    """Which validation-evaluated iterate a run returns (``config.select == "best"``).

    Tiers: feasible on validation (2), else DP/EO violations indistinguishable from chance (1, computed only
    when it can change the choice), else none (0). A higher tier wins; within tiers 1 and 2 the better fit on
    validation wins (:meth:`fits_better`; a tie keeps the earlier), within tier 0 the smaller largest excess
    over epsilon.

    Tried and not adopted (2026-11-27): keeping the latest iterate within one standard error of the tier's
    best accuracy. It helped an undertrained head (10 epochs, unskewed BBQ Religion: BT test gold accuracy
    0.818 -> 0.829, 3 seeds) and hurt the skewed 50-epoch BBQ runs, where later iterates fit the skew: BT
    validation gold accuracy 0.835 -> 0.814, DP 0.096 -> 0.160 (bench/trainer_bbq.py).

    ``select_metric="loss"`` (validation Bradley-Terry loss instead of accuracy, TRL's ``eval_loss``) is an
    option, not the default, for the same reason (2026-11-27): on 10 unskewed epochs it returns the last
    iterate (BT test gold accuracy 0.820 -> 0.829, 3 seeds), on the skewed 50-epoch BBQ runs it picked an
    iterate one epoch later whose gold accuracy is lower (test 0.828 -> 0.812 for BT, 0.831 -> 0.815 for
    Faro-DP, whose test DP rose 0.141 -> 0.213). Adjacent epochs differ by ~1.5 points of gold accuracy there,
    and observed-label validation accuracy is the criterion that tracked it.
    """

    def __init__(self, config: FaroConfig, constraints: ConstraintSet, index: GroupIndex) -> None:
        self.config, self.constraints, self.index = config, constraints, index

    def fits_better(self, m: dict[str, Any], ref: dict[str, Any]) -> bool:
        """Within a tier: higher validation accuracy, or lower validation BT loss (``select_metric="loss"``);
        a tie keeps the earlier iterate."""
        if self.config.select_metric == "loss":
            return m["loss"] < ref["loss"]
        return m["accuracy"] > ref["accuracy"]

    @staticmethod
    def tier(m: dict[str, Any]) -> int:
        return 2 if m["feasible"] else 1 if m.get("within_chance") else 0

    def better(self, m: dict[str, Any], ref: dict[str, Any] | None) -> bool:
        """Should iterate ``m`` (validation metrics; ``m["_batch"]``, popped here, lets the chance tier be
        computed) replace ``ref``, the choice so far?"""
        batch = m.pop("_batch", None)
        tier = self.tier
        if (batch is not None and self.constraints and self.config.select_chance > 0 and not m["feasible"]
                and (ref is None or tier(ref) == 0 or (tier(ref) == 1 and self.fits_better(m, ref)))):
            m["within_chance"] = _within_chance(batch, self.constraints, self.index, self.config)
        if ref is None:
            return True
        if tier(m) != tier(ref):
            return tier(m) > tier(ref)
        if tier(m):
            return self.fits_better(m, ref)
        return m["max_excess"] < ref["max_excess"]


def write_scores(run: Run, df: pd.DataFrame, tens: PairTensors, rewards: tuple[np.ndarray, ...]) -> None:
    """``scores.parquet``: every pair of every split with its rewards (r_chosen, r_rejected, cf_r_*; [N] each)
    and attributes, text left out -- what evaluation reads instead of re-scoring."""
    r_c, r_r, cf_c, cf_r = rewards
    scores = df.drop(columns=["prompt", "chosen", "rejected", "cf_prompt", "cf_chosen", "cf_rejected"])
    scores = scores.assign(r_chosen=r_c, r_rejected=r_r, cf_r_chosen=cf_c, cf_r_rejected=cf_r,
                           order=tens.order.numpy())
    for col in scores.columns:  # Parquet needs one type per column
        if scores[col].dtype == object:
            scores[col] = scores[col].map(lambda v: None if v is None else str(v))
    write_parquet(run.file("scores.parquet"), scores)


# ---------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------
def _save_checkpoint(run: Run, model: torch.nn.Module, opt: torch.optim.Optimizer, gda: ProxyGDA,
                     state: dict[str, Any], best_state: dict[str, torch.Tensor] | None,
                     extra: dict[str, torch.Tensor] | None = None) -> None:
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"extra.{k}": v for k, v in (extra or {}).items()})
    if best_state is not None:
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
    tensors.update({f"gda.{k}": v for k, v in gda.state_tensors().items()})
    osd = opt.state_dict()
    for pid, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng"] = torch.get_rng_state()
    ckpt = run.file("checkpoint")
    # The tensors go to a file named by step and state.json, written last, names it: a kill between the two
    # writes leaves the previous (state.json, tensors) pair intact instead of new tensors with an old step.
    name = f"state-{int(state['step']):09d}.safetensors"
    write_safetensors(ckpt / name, tensors)
    write_json(ckpt / "state.json", {**state, "tensors": name, "param_groups": osd["param_groups"]})
    for old in ckpt.glob("state*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def _load_checkpoint(run: Run, model: torch.nn.Module, opt: torch.optim.Optimizer, gda: ProxyGDA
                     ) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None, dict[str, torch.Tensor]] | None:
    from safetensors.torch import load_file

    ckpt = run.file("checkpoint")
    if not (ckpt / "state.json").exists():
        return None
    state = read_json(ckpt / "state.json")
    name = str(state.pop("tensors", "state.safetensors"))  # older checkpoints: one fixed name
    if Path(name).name != name or not (ckpt / name).exists():
        return None
    t = load_file(str(ckpt / name))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in t.items() if k.startswith("best.")} or None
    gda.load_state_tensors({k[4:]: v for k, v in t.items() if k.startswith("gda.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    torch.set_rng_state(t["rng"])
    return state, best, {k[6:]: v for k, v in t.items() if k.startswith("extra.")}


# ---------------------------------------------------------------------------------------------------
# main entry
# ---------------------------------------------------------------------------------------------------
def _example_weights(df: pd.DataFrame, method: str) -> torch.Tensor | None:
    """Pre-processing baseline (Kamiran & Calders reweighing): w(a, c) = P(a) P(c) / P(a, c), with a the
    pair's group and c the group the chosen response names, so that who wins is independent of the group.
    [N] weights, one per pair; the probabilities are estimated on the training split only (``c`` follows the
    observed label, so estimating them on every split let held-out labels into the training weights)."""
    if method != "reweight":
        return None
    a = df["group"].fillna("(none)").astype(str).to_numpy()
    c = df["chosen_group"].fillna("(none)").astype(str).to_numpy()
    train = (df["split"] == "train").to_numpy() if "split" in df else np.ones(len(df), dtype=bool)
    a_tr, c_tr = pd.Series(a[train]), pd.Series(c[train])
    pa = pd.Series(a).map(a_tr.value_counts(normalize=True))
    pc = pd.Series(c).map(c_tr.value_counts(normalize=True))
    pac = pd.Series(list(zip(a, c))).map(pd.Series(list(zip(a_tr, c_tr))).value_counts(normalize=True))
    # a (group, chosen group) combination absent from training has no training pair to weigh: weight 1
    w = ((pa * pc) / pac).fillna(1.0).to_numpy()
    return torch.tensor(w, dtype=torch.float32)


def _posthoc_shifts(df: pd.DataFrame, r_c: np.ndarray, r_r: np.ndarray,
                    scope: list[str] | None = None) -> dict[str, float]:
    """Post-processing baseline: per (group, stratum) additive shift that equalizes each group's mean
    *pair-centered* reward ((r_self - r_other) / 2) with its stratum's, estimated on the training split, in
    the strata DP applies to (``scope``; None: all). Raw rewards carry per-prompt offsets that Bradley-Terry
    never sees (see DemographicParity); shifting by raw means moved whole categories (gold accuracy 0.61)."""
    half = (np.asarray(r_c) - np.asarray(r_r)) / 2
    resp = pd.DataFrame({
        "g": list(df["chosen_group"]) + list(df["rejected_group"]),
        "s": list(df["stratum"]) * 2,
        "r": np.concatenate([half, -half]),
    }).dropna(subset=["g"])
    if scope is not None:
        resp = resp[resp["s"].isin(scope)]
    strat_mean = resp.groupby("s")["r"].mean()
    cell_mean = resp.groupby(["g", "s"])["r"].mean()
    return {f"{g}|{s}": float(strat_mean[s] - m) for (g, s), m in cell_mean.items()}


def _apply_shifts(df: pd.DataFrame, r: np.ndarray, group_col: str, shifts: dict[str, float]) -> np.ndarray:
    add = np.array([shifts.get(f"{g}|{s}", 0.0) if g is not None else 0.0
                    for g, s in zip(df[group_col], df["stratum"])], dtype=np.float32)
    return r + add


class _IterateAverage:
    """Exponential moving average of the model's weights (decay per step), swappable into the model."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            self.state[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)

    @contextlib.contextmanager
    def swapped(self, model: torch.nn.Module) -> Iterator[None]:
        live = copy.deepcopy(model.state_dict())
        model.load_state_dict(self.state)
        try:
            yield
        finally:
            model.load_state_dict(live)


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
                 model: torch.nn.Module, rank: int = 0, world: int = 1, data_name: str = "the data") -> None:
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
        self.opt = make_adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        fixed = config.fixed_lambda if config.method == "fixed_lambda" else None
        self.gda = ProxyGDA(self.constraints, dual_lr=config.dual_lr, ema=config.ema, fixed_lambda=fixed,
                            reduce=_all_reduce_sum, dual_signal=config.dual_signal, lambda_max=config.lambda_max)
        self.weights = _example_weights(df, config.method)
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
        # head mode: a fresh no-grad pass over the split for each dual step (cheap there). Dual steps on a
        # buffer of each pair's latest rewards (no extra pass; what full mode uses) made the multipliers
        # overshoot on BBQ (training-split DP 0.81, against 0.10 with fresh statistics).
        self.exact_dual = config.dual_source == "exact" or (config.dual_source == "auto" and config.mode == "head")
        self.use_buffer = bool(self.constraints) and not self.exact_dual
        # They live on the rewards' device: a per-step copy to the host would stall a GPU every step.
        self.buf = [torch.zeros(len(df)) for _ in range(4)]
        self.seen = torch.zeros(len(df), dtype=torch.bool)
        role_cons = [c for c in self.constraints.constraints if c.term_key()[0] in ITEM_TERMS]
        self.role_batches = None
        if role_cons:
            from faro_core.train.role_batches import RoleItemBatches

            self.role_batches = RoleItemBatches(tens, self.shard, role_cons, n_items=bs, seed=config.seed)
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
            self._fill(self.shard, _split_rewards(self.backend, self.model, self.shard, with_twins=self.need_twins))

    def buffer_state(self) -> dict[str, torch.Tensor] | None:
        """The reward buffer, for a checkpoint (None when unused)."""
        if not self.use_buffer:
            return None
        return {**{f"buf{k}": b.cpu() for k, b in enumerate(self.buf)}, "seen": self.seen}

    def load_buffers(self, extra: dict[str, torch.Tensor]) -> None:
        if self.world == 1 and "seen" in extra:  # so a resumed run replays exactly
            for k, b in enumerate(self.buf):
                b.copy_(extra[f"buf{k}"])
            self.seen.copy_(extra["seen"])

    def step(self, step: int) -> dict[str, Any]:
        """Training step number ``step`` (0-based). Returns loss tensors, the step number and whether the dual
        step ran; the strict violations of the last dual step are in :attr:`g_strict`."""
        config, constraints, gda = self.config, self.constraints, self.gda
        epoch, pos = divmod(step, self.steps_per_epoch)
        g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        perm = self.shard[torch.randperm(len(self.shard), generator=g)]
        local = perm[pos * self.bs_local:(pos + 1) * self.bs_local]
        n_bt = len(local)
        if constraints and self.cbs:
            # An extra constraint batch (seeded by step, so resume replays it): the fixed-penalty baseline's
            # hinge needs per-batch cell rates, which a 128-pair batch over hundreds of cells leaves empty.
            gc = torch.Generator().manual_seed(config.seed * 7_919 + step)
            local = torch.cat([local, self.shard[torch.randperm(len(self.shard),
                                                                generator=gc)[:math.ceil(self.cbs / self.world)]]])
        n_pair = len(local)  # pairs of the pair-level terms; the role batch's pairs follow (no BT loss)
        if self.role_batches is not None:
            local = torch.cat([local, self.role_batches.draw(step)])
        rewards = tuple(r.float() for r in self.backend.rewards(self.ddp_model, local, with_twins=self.need_twins))
        r_c, r_r = rewards[0][:n_bt], rewards[1][:n_bt]
        # the batch's indices on the rewards' device, copied once (asynchronously) for the penalty and the buffer
        local_dev = to_device(local, r_c.device) if constraints else local
        w = to_device(self.weights[local[:n_bt]], r_c.device) if self.weights is not None else None
        if n_bt:
            loss_bt = bt_loss(r_c, r_r, w)
        else:  # a shard's last batch can be empty under DDP: still join the gradient all-reduce
            loss_bt = sum(p.sum() * 0.0 for p in self.model.parameters())
        if constraints:
            head = tuple(r[:n_pair] for r in rewards)
            if gda.fixed is not None:  # the hinge needs cell rates: a full PairBatch
                loss = loss_bt + gda.penalty(self.tens.batch(local[:n_pair], head))
            else:  # the linearized penalty needs the rewards only
                loss = loss_bt + gda.penalty(PairBatch(*head[:2], *([None] * 6), *head[2:]), local_dev[:n_pair])
            if self.role_batches is not None:  # the role constraints' item terms, on the role batch
                tail = tuple(r[n_pair:] for r in rewards)
                loss = loss + gda.item_penalty(self.tens.batch(local[n_pair:], tail), local[n_pair:],
                                               self.role_batches.factor)
            if self.use_buffer:
                self._fill(local, rewards, local_dev)
        else:
            loss = loss_bt
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        dual_now = bool(self.dual_every) and (step + 1) % self.dual_every == 0
        if dual_now:
            if self.exact_dual:
                if isinstance(self.backend, HeadBackend):  # each distinct response once
                    rw = self.backend.unique_rewards(self.model, self.shard, with_twins=self.need_twins)
                else:
                    rw = _split_rewards(self.backend, self.model, self.shard, with_twins=self.need_twins)
                self.g_strict = gda.dual_step(self.tens.batch(self.shard, rw))
            else:
                mine = self.shard[self.seen[self.shard]]
                self.g_strict = gda.dual_step(self.tens.batch(mine, tuple(b[to_device(mine, b.device)] for b in self.buf)))
            self._viol = constraints.max_by_kind(self.g_strict)
        return {"step": step + 1, "epoch": epoch, "loss": loss, "loss_bt": loss_bt, "dual": dual_now}

    @staticmethod
    def finish_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Turn the rows' loss tensors into rounded floats, with one device read for all of them."""
        if rows:
            vals = torch.stack([r[k].float().reshape(()) for r in rows for k in ("loss", "bt_loss")]).tolist()
            for i, r in enumerate(rows):
                r["loss"], r["bt_loss"] = round(vals[2 * i], 6), round(vals[2 * i + 1], 6)
        return rows

    def log_row(self, out: dict[str, Any]) -> dict[str, Any]:
        """The history row of a step: losses, the largest strict violation per kind and the largest
        multiplier every step; the full multiplier and violation vectors when they change (dual steps)."""
        # losses stay tensors until finish_rows: reading them back every step would stall a GPU
        row: dict[str, Any] = {"step": out["step"], "epoch": out["epoch"], "loss": out["loss"].detach(),
                               "bt_loss": out["loss_bt"].detach()}
        if self.constraints:
            row["violation"] = dict(self._viol)
            row["lambda_max"] = float(self.gda.lam.max())
            if out["dual"] or out["step"] == 1:
                row["lambda"] = [round(v, 5) for v in self.gda.lam.tolist()]
                row["g"] = [round(v, 5) for v in self.g_strict.tolist()]
        return row


def train(config: FaroConfig, store: RunStore | None = None, run_id: str | None = None, resume: bool = False,
          progress: bool = True, on_step: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Train one reward model and write it to the run store. Returns the finished :class:`Run`.

    With ``resume=True`` and an existing ``run_id``, continues from the run's last checkpoint with the
    run's stored config (``config`` is then ignored).
    """
    store = store or RunStore()
    _maybe_init_distributed()
    rank, world = _dist()
    if resume:
        if not run_id:
            raise FaroError("--resume needs a run id")
        run = store.get(run_id)
        if run.status == "done":
            return run
        config = FaroConfig.from_dict(run.config)
    else:
        config = config.resolved()
        if rank == 0:
            run = store.create(config.to_dict(), run_id=run_id)
        if world > 1:  # every rank needs the same run id
            obj = [run.run_id if rank == 0 else None]
            torch.distributed.broadcast_object_list(obj, src=0)
            run = Run(obj[0], store.path(obj[0]))
    if rank == 0:
        run.set_status("running", world_size=world)
    try:
        with Heartbeat(run) if rank == 0 else _null():
            _fit(config, run, resume, progress and rank == 0, rank, world, on_step)
    except BaseException as exc:
        if rank == 0:
            interrupted = isinstance(exc, KeyboardInterrupt)
            run.set_status("interrupted" if interrupted else "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    if rank == 0:
        run.set_status("done")
    return run


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def _fit(config: FaroConfig, run: Run, resume: bool, progress: bool, rank: int, world: int,
         on_step: Callable[[dict[str, Any]], None] | None) -> None:
    from tqdm.auto import tqdm

    if config.method == "expgrad":
        from faro_core.train.expgrad import fit_expgrad

        fit_expgrad(config, run, progress=progress)
        return
    torch.manual_seed(config.seed)
    device = "cuda" if (config.mode == "full" and torch.cuda.is_available()) else "cpu"
    if config.mode == "head" and device == "cpu":
        # A head step is a few small matmuls: one thread is 4x faster than two when cores are shared
        # (measured 12 ms vs 47 ms per 1024x384 MLP forward), and sweeps run one process per core.
        torch.set_num_threads(1)
    data, df, index = load_training_data(config)
    tens = PairTensors.from_frame(df, index)
    split_idx = {s: torch.from_numpy(np.flatnonzero((df["split"] == s).to_numpy())) for s in SPLITS}
    if len(split_idx["train"]) == 0:
        raise FaroError("the training split is empty")
    backend = HeadBackend(config, df, progress) if config.mode == "head" else FullBackend(config, df, progress,
                                                                                           device)
    model = backend.model.to(device)
    stepper = TrainStepper(config, df, index, tens, backend, model, rank=rank, world=world, data_name=data.name)
    constraints, gda, opt = stepper.constraints, stepper.gda, stepper.opt
    measure = all_constraints(index, config.min_count)
    active = config.active_constraints
    cell_counts = stepper.cell_counts
    idle = [c for c in constraints.constraints if c.cell_mask is not None and not bool(c.cell_mask.any())]
    if idle and rank == 0:  # asked for, but nothing to constrain: say so instead of silently training plain BT
        for c in idle:
            largest = int(c.full_counts[0].max()) if c.full_counts is not None and c.full_counts[0].numel() else 0
            print(f"faro: warning: no {c.kind.upper()} cell has {config.min_count} members in the training split "
                  f"(largest: {largest}), so {c.kind.upper()} constrains nothing and this run is plain "
                  f"Bradley-Terry for it; lower --min-count or use fewer --strata", file=sys.stderr)
        cell_counts = {**cell_counts, "unconstrained_kinds": [c.kind for c in idle]}
    total = stepper.steps_per_epoch * config.epochs
    eval_every = config.eval_every or stepper.steps_per_epoch
    if rank == 0:
        run.write("constraints.json", {"names": constraints.names(), "epsilon": constraints.epsilons().tolist(),
                                       "index": index.to_dict(), "cells": cell_counts,
                                       "constrained": [bool(v) for c in constraints.constraints for v in
                                                       (c.cell_mask.tolist() * (2 if c.two_sided else 1))]})
        run.write("data.json", {"name": data.name, "meta": data.meta, "strata": data.strata,
                                "pairs": {s: int(len(v)) for s, v in split_idx.items()},
                                "groups": data.groups(), "response_groups": data.response_groups(),
                                "feature_seconds": backend.feature_seconds, "encoded": backend.encoded})

    step, best_state, best = 0, None, None
    if resume:
        loaded = _load_checkpoint(run, model, opt, gda)
        if loaded is not None:
            st, best_state, extra = loaded
            step, best = st["step"], st.get("best")
            stepper.load_buffers(extra)
            stepper.g_strict = gda.last_strict.clone()
            stepper._viol = constraints.max_by_kind(stepper.g_strict)
        if rank == 0:  # history beyond the checkpoint (all of it, when killed before the first) is replayed
            hist = [h for h in run.history() if h.get("step", 0) <= step]
            from faro_core.io import _atomic, to_json
            text = "".join(to_json(h) + "\n" for h in hist)
            _atomic(run.file("history.jsonl"), lambda tmp: open(tmp, "w").write(text))

    def evaluate(split: str) -> dict[str, Any]:
        idx = split_idx[split]
        rewards = _split_rewards(backend, model, idx)
        batch = tens.batch(idx, rewards)
        out = split_metrics(batch, constraints, measure, tens.label[idx] if
                            df["gold"].notna().any() else torch.full((len(idx),), float("nan")))
        out["_batch"] = batch  # for the chance tier, computed only when it can change the choice (better())
        return out

    better = IterateSelector(config, constraints, index).better

    stepper.prepare()
    # Rows are written in groups of 10 steps (and at every evaluation, checkpoint and the end): on a GPU each
    # read-back is a synchronization (TRL logs the same way); on a CPU one file append per ~2 ms head step
    # cost ~4% of a small sweep. A resumed run replays the history up to its checkpoint, so nothing is lost.
    log_every = 10
    pending: list[dict[str, Any]] = []
    last_progress = 0.0
    bar = tqdm(total=total, initial=step, desc=run.run_id, unit="step", disable=not progress, file=sys.stderr)
    model.train()
    avg = _IterateAverage(model, config.average) if config.average and constraints else None
    loop_t0 = time.perf_counter()
    while step < total:
        epoch = step // stepper.steps_per_epoch
        row = stepper.log_row(stepper.step(step))
        # when the step ended (host clock, seconds since this loop started; restarts on resume): rows reach
        # the file and ``on_step`` in groups, so their arrival time is not the step's time
        row["time"] = round(time.perf_counter() - loop_t0, 4)
        step += 1
        if avg is not None:
            avg.update(model)
        if step % eval_every == 0 or step == total:
            val = evaluate("val")
            is_better = config.select == "last" or better(val, best)
            val.pop("_batch", None)
            row["val"] = {k: val[k] for k in VAL_LOG_KEYS if k in val}
            if is_better:
                best = {**val, "step": step}
                best_state = copy.deepcopy(model.state_dict())
            if avg is not None and config.select != "last":
                # the averaged iterate is a candidate too (a deterministic stand-in for the randomized
                # mixture of iterates that Cotter et al.'s guarantee is about)
                with avg.swapped(model):
                    val_avg = evaluate("val")
                avg_better = better(val_avg, best)
                row["val_average"] = {k: val_avg[k] for k in VAL_LOG_KEYS
                                      if k in val_avg}
                if avg_better:
                    best = {**val_avg, "step": step, "averaged": True}
                    best_state = copy.deepcopy(avg.state)
        pending.append(row)
        ckpt_now = bool(config.ckpt_every) and step % config.ckpt_every == 0 and step < total
        if len(pending) >= log_every or "val" in row or ckpt_now or step == total:
            rows, pending = stepper.finish_rows(pending), []
            if rank == 0:
                run.log(rows)
                if time.monotonic() - last_progress > 0.5 or step == total:  # an fsynced file per step cost ~7%
                    run.set_progress(step, total, epoch=epoch)
                    last_progress = time.monotonic()
                if on_step:
                    for r in rows:
                        on_step(r)
        bar.update(1)
        if rank == 0 and ckpt_now:
            _save_checkpoint(run, model, opt, gda, {"step": step, "best": best}, best_state, stepper.buffer_state())
    bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    if rank != 0:
        return
    # final scores for every pair of every split, with the selected iterate
    all_idx = torch.arange(len(df))
    r_c, r_r, cf_c, cf_r = (t.numpy() for t in _split_rewards(backend, model, all_idx))
    meta = dict(backend.meta)
    if config.method == "posthoc":
        tr = (df["split"] == "train").to_numpy()
        shifts = _posthoc_shifts(df[tr], r_c[tr], r_r[tr], index.dp_strata)
        meta["shifts"] = shifts
        r_c = _apply_shifts(df, r_c, "chosen_group", shifts)
        r_r = _apply_shifts(df, r_r, "rejected_group", shifts)
        # Twins are left unshifted: the shift is keyed on the group a response names, which a swap changes.
    write_scores(run, df, tens, (r_c, r_r, cf_c, cf_r))
    backend.export(run, model)
    run.write("model.json", meta)

    def metrics_for(split: str) -> dict[str, Any]:
        idx = split_idx[split]
        if len(idx) == 0:
            return {}
        rw = tuple(torch.from_numpy(np.asarray(a)[idx.numpy()]).float() for a in (r_c, r_r, cf_c, cf_r))
        gold = tens.label[idx] if df["gold"].notna().any() else torch.full((len(idx),), float("nan"))
        out = split_metrics(tens.batch(idx, rw), constraints, measure, gold)
        if index.attribute == "role":  # the raw rates, and the named-group violations for reference
            from faro_core.fairness.role import role_report

            rows = df.iloc[idx.numpy()].assign(r_chosen=rw[0].numpy(), r_rejected=rw[1].numpy())
            out["role"] = role_report(rows, n_boot=0)
            group_index = dataclasses.replace(index, attribute="group")
            out["violation_group"] = split_metrics(tens.batch(idx, rw), ConstraintSet([]),
                                                   all_constraints(group_index, config.min_count), gold)["violation"]
        return out

    val = metrics_for("val")
    metrics = {**val, "split": "val", "selected_step": (best or {}).get("step", step),
               "selected_average": bool((best or {}).get("averaged", False)),
               "selected_by": _selected_by(best, config, bool(constraints)), "steps": total,
               "test": metrics_for("test"), "train": metrics_for("train"),
               "constraints": active, "epsilon": config.epsilon if math.isfinite(config.epsilon) else None,
               "method": config.method}
    run.write("metrics.json", metrics)
    run.set_progress(total, total, epoch=config.epochs)
