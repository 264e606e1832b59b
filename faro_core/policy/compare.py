"""Generations compared across rewards (in the manner of PAIR's LLM Comparator: the same prompt, the models'
choices side by side, what differs, sliced by tags).

For a prompt, each reward's **best-of-n** choice among the same ``n`` samples of the reference LM, with its
reward score and the sample's group tag (:func:`faro_core.policy.generate.mention`: which of the item's two
groups it names). Two sources of prompts:

- stored: the BBQ prompts of ``faro policy --generate`` (``policy_generations.parquet`` of each run, the same
  samples reranked under each run's reward): :func:`stored_choices`;
- typed: a prompt the user writes, sampled live from the reference LM and reranked under each reward
  (:func:`rerank_prompt`), with a progress callback per stage.

Where a run has a KL-regularised fine-tuned policy (``faro policy finetune``, RLOO; ``policy_finetune.json``
names its folder), :func:`finetuned_samples` draws that policy's own replies to the same prompt.

Reward scores are shown in sd units of the reward's scores over the prompt's n samples (a reward's raw
scale is arbitrary), so two rewards' numbers sit on one scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import FaroError

CHOICE_COLUMNS = ["prompt_idx", "user_text", "category", "model", "text", "reward_sd", "mention", "differs"]


def _zscore(r: np.ndarray) -> np.ndarray:
    sd = float(r.std())
    return (r - r.mean()) / (sd if sd > 0 else 1.0)


def choices_from_samples(samples: pd.DataFrame, rewards: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each model's best-of-n pick per prompt from one shared sample set.

    ``samples``: one row per sample with ``prompt_idx, user_text, text`` (and ``category``, ``mention`` when
    known); ``rewards``: model name -> raw rewards aligned with ``samples``. Returns one row per (prompt, model)
    with the chosen text, its reward in sd units over that prompt's samples, its tag, ``sample_idx`` and
    ``differs`` (the models do not all pick the same sample for this prompt).
    """
    if samples.empty or not rewards:
        return pd.DataFrame(columns=CHOICE_COLUMNS + ["sample_idx"])
    rows = []
    pidx = samples["prompt_idx"].to_numpy()
    for p in pd.unique(pidx):
        m = np.flatnonzero(pidx == p)
        picks = {}
        for model, r in rewards.items():
            rr = np.asarray(r, dtype=np.float64)[m]
            z = _zscore(rr)
            j = int(np.argmax(rr))
            picks[model] = (m[j], float(z[j]))
        differs = len({i for i, _ in picks.values()}) > 1
        for model, (i, z) in picks.items():
            s = samples.iloc[i]
            rows.append({"prompt_idx": int(p), "user_text": s["user_text"], "category": s.get("category", ""),
                         "model": model, "text": s["text"], "reward_sd": z, "mention": s.get("mention", "—"),
                         "differs": differs, "sample_idx": int(s.get("sample_idx", i))})
    return pd.DataFrame(rows)


def stored_choices(runs: Sequence[Any]) -> pd.DataFrame:
    """:func:`choices_from_samples` over the stored BBQ generations (``policy_generations.parquet``) of
    ``runs``; only prompts every run has. :class:`FaroError` naming the command when a run has none."""
    frames = {}
    for run in runs:
        p = run.file("policy_generations.parquet")
        if not p.exists():
            raise FaroError(f"run {run.run_id} has no generations yet — run `faro policy {run.run_id} --generate`")
        frames[run.run_id] = pd.read_parquet(p)
    if not frames:
        return pd.DataFrame(columns=CHOICE_COLUMNS + ["sample_idx"])
    first = next(iter(frames.values())).copy()
    if "sample_idx" not in first:
        first["sample_idx"] = first.groupby("prompt_idx").cumcount()
    key = ["prompt_idx", "sample_idx"]
    base = first[[c for c in ("prompt_idx", "sample_idx", "user_text", "text", "category", "mention") if c in first]]
    rewards = {}
    for rid, df in frames.items():
        df = df.copy()
        if "sample_idx" not in df:
            df["sample_idx"] = df.groupby("prompt_idx").cumcount()
        base = base.merge(df[key + ["reward"]].rename(columns={"reward": f"reward:{rid}"}), on=key, how="inner")
    for rid in frames:
        rewards[rid] = base[f"reward:{rid}"].to_numpy()
    return choices_from_samples(base.drop(columns=[f"reward:{r}" for r in frames]), rewards)


def filter_choices(choices: pd.DataFrame, categories: Sequence[str] | None = None,
                   mentions: Sequence[str] | None = None, only_differing: bool = False) -> pd.DataFrame:
    """Prompts whose category is in ``categories`` and where some model's pick has a tag in ``mentions``
    (None: no filter); ``only_differing``: only prompts where the models' picks differ."""
    keep = choices
    if categories:
        keep = keep[keep["category"].astype(str).isin([str(c) for c in categories])]
    if mentions:
        hit = keep.groupby("prompt_idx")["mention"].apply(lambda s: bool(set(s) & set(mentions)))
        keep = keep[keep["prompt_idx"].map(hit).fillna(False).astype(bool)]
    if only_differing:
        keep = keep[keep["differs"]]
    return keep.reset_index(drop=True)


def rerank_prompt(runs: Sequence[Any], user_text: str, n: int = 4, max_new_tokens: int = 48, seed: int = 0,
                  lm: str | None = None, progress: Callable[[float, str], None] | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Sample ``n`` replies to ``user_text`` from the reference LM, then score them under each run's reward.

    ``progress(fraction, message)`` is called after sampling and after each reward. Returns
    ``(samples, choices)``: every sample with each run's reward (``reward:<run>``, sd units over the n) and
    best-of-n flag (``best:<run>``), and :func:`choices_from_samples`.
    """
    from faro_core.policy.evaluate import run_scorer
    from faro_core.policy.generate import GenerationConfig, generate

    text = (user_text or "").strip()
    if not text:
        raise FaroError("type a prompt first")
    if not runs:
        raise FaroError("choose at least one reward")
    if not 1 <= int(n) <= 16:
        raise FaroError(f"n must be between 1 and 16, got {n}")
    say = progress or (lambda f, m: None)
    say(0.0, f"sampling {n} replies from the reference LM…")
    samples = generate([text], GenerationConfig(n=int(n), max_new_tokens=int(max_new_tokens), seed=int(seed)), lm=lm)
    samples = samples.drop(columns=["seconds"]).assign(category="(typed prompt)", mention="—")
    rewards: dict[str, np.ndarray] = {}
    for i, run in enumerate(runs):
        say(0.3 + 0.7 * i / len(runs), f"scoring under {run.run_id}…")
        r = np.asarray(run_scorer(run).score([text] * len(samples), list(samples["text"])), dtype=np.float64)
        rewards[run.run_id] = r
        samples[f"reward:{run.run_id}"] = _zscore(r)
        samples[f"best:{run.run_id}"] = np.arange(len(r)) == int(np.argmax(r))
    say(1.0, "done")
    return samples, choices_from_samples(samples, rewards)


def finetuned_policy_dir(run: Any) -> Path | None:
    """The folder of the run's RLOO fine-tuned policy (``policy_finetune.json``'s ``output_dir``), if it exists."""
    info = run.read("policy_finetune.json") or {}
    d = info.get("output_dir")
    return Path(d) if d and Path(d).exists() else None


def finetuned_samples(run: Any, user_texts: Sequence[str], n: int = 2, max_new_tokens: int = 48,
                      seed: int = 0) -> pd.DataFrame:
    """Replies of the run's fine-tuned policy to ``user_texts`` (``n`` each): ``prompt_idx, sample_idx,
    user_text, text``; :class:`FaroError` when the run has no fine-tuned policy."""
    from faro_core.policy.generate import GenerationConfig, generate

    d = finetuned_policy_dir(run)
    if d is None:
        raise FaroError(f"run {run.run_id} has no fine-tuned policy — run `faro policy finetune {run.run_id}`")
    out = generate(list(user_texts), GenerationConfig(n=int(n), max_new_tokens=int(max_new_tokens), seed=int(seed)),
                   lm=str(d))
    return out.drop(columns=["seconds"])
