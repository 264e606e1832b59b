"""How the rewards of a batch of pairs are computed: the head backend (frozen backbone, cached features,
trainable head) and the full backend (the backbone fine-tuned), with the distributed helpers they share.

A backend has ``rewards(model, idx, with_twins) -> (r_chosen, r_rejected, cf_r_chosen, cf_r_rejected)``,
four [B] tensors (NaN where a pair has no twin), ``export(run, model)``, ``meta`` (what ``model.json``
records), ``feature_seconds`` and ``encoded``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import torch

from faro_core.io import write_safetensors
from faro_core.models.features import FeatureCache, resolve_backbone
from faro_core.models.reward import HeadRewardModel, bucketed_rewards, load_sequence_classifier, pad_encodings
from faro_core.store.runs import Run
from faro_core.train.config import FaroConfig


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


def unstack_rewards(r: torch.Tensor, twin: torch.Tensor) -> tuple[torch.Tensor, ...]:
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

    def __init__(self, config: FaroConfig, df: pd.DataFrame, progress: bool,
                 feature_cache: Callable[..., Any] = FeatureCache) -> None:
        self.cache = feature_cache(config.backbone, max_length=config.max_length, progress=progress)
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
        self._every_row = torch.arange(len(self.x_all))  # the row plan of every pair, in order
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

    def row_plan(self, idx: torch.Tensor, with_twins: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, twin): the rows of :attr:`x_all` that score the pairs ``idx`` [n] -- chosen, rejected, then
        the twins (chosen, rejected) of the pairs with ``twin`` [n] True -- in the order ``unstack_rewards``
        reads them back."""
        n = self.n_pairs
        tw = self.has_twin[idx] if with_twins else torch.zeros(len(idx), dtype=torch.bool)
        sel = idx[tw]
        return torch.cat([idx, idx + n, sel + 2 * n, sel + 3 * n]), tw

    def rewards(self, model: torch.nn.Module, idx: torch.Tensor, with_twins: bool = True) -> tuple[torch.Tensor, ...]:
        # One forward pass over chosen, rejected and twins: fewer calls, and DDP sees one forward per backward.
        rows, tw = self.row_plan(idx, with_twins)
        every = len(rows) == len(self.x_all) and torch.equal(rows, self._every_row)
        # all rows in order (a whole small data set: the final scoring): the features as they are, not a copy
        return unstack_rewards(model(self.x_all if every else self.x_all.index_select(0, rows)), tw)

    @torch.no_grad()
    def unique_rewards(self, model: torch.nn.Module, idx: torch.Tensor, with_twins: bool = True,
                       chunk: int = 4096) -> tuple[torch.Tensor, ...]:
        """What ``split_rewards(self, model, idx)`` returns, scoring each distinct feature row once.

        A response shared by two pairs of an item (BBQ's "unknown", or the answer in both of its pairs) has one
        feature row, scored once; the row map is built once per ``idx`` tensor (``torch.unique``).
        """
        plan = self._plans.get(with_twins)
        # the same pairs (e.g. the training split of several members of a batch) reuse the plan
        if plan is None or (plan[0] is not idx and not (len(plan[0]) == len(idx) and torch.equal(plan[0], idx))):
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
        return tuple(t.cpu() for t in unstack_rewards(r_u[inv], tw))

    def export(self, run: Run, model: torch.nn.Module) -> None:
        write_safetensors(run.file("model.safetensors"), model.state_dict())


class FullBackend:
    """Backbone fine-tuned (bf16 autocast on a GPU). Texts are tokenized once up front; batches are padded
    dynamically to their own longest pair, which is where most of the speed over a naive loop comes from."""

    def __init__(self, config: FaroConfig, df: pd.DataFrame, progress: bool, device: str) -> None:

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
        cuda = self.device.startswith("cuda")
        if not cuda and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            # CPU: compute scales with padded tokens, so run length-sorted micro-batches (same rewards up to
            # float rounding). DDP needs one forward per backward; a GPU keeps the single padded forward.
            budget = self.MICRO_TOKENS * (1 if torch.is_grad_enabled() else 4)
            return bucketed_rewards(model, self.tok, encs, self.device, budget)

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
        target = run.file("hf_model")
        tmp = tempfile.mkdtemp(prefix=".hf_model.", dir=run.path)
        model.save_pretrained(tmp, safe_serialization=True)
        self.tok.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def maybe_init_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    rank, world = rank_and_world()
    if world > 1:
        t = t.clone()
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


@torch.no_grad()
def split_rewards(backend: Any, model: torch.nn.Module, idx: torch.Tensor, chunk: int = 4096,
                   with_twins: bool = True) -> tuple[torch.Tensor, ...]:
    model.eval()
    parts = [backend.rewards(model, idx[i:i + chunk], with_twins) for i in range(0, len(idx), chunk)]
    model.train()
    return tuple(torch.cat([p[k] for p in parts]).float().cpu() for k in range(4))
