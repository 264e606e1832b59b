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

CHOICE_COLUMNS = ["prompt_idx", "user_text", "category", "model", "text", "reward_sd", "mention", "differs",
                  "filtered"]


def _zscore(r: np.ndarray) -> np.ndarray:
    sd = float(r.std())
    return (r - r.mean()) / (sd if sd > 0 else 1.0)


def choices_from_samples(samples: pd.DataFrame, rewards: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each model's best-of-n pick per prompt from one shared sample set.

    ``samples``: one row per sample with ``prompt_idx, user_text, text`` (and ``category``, ``mention`` when
    known); ``rewards``: model name -> raw rewards aligned with ``samples``. Returns one row per (prompt, model)
    with the chosen text, its reward in sd units over that prompt's samples, its tag, ``sample_idx``,
    ``filtered`` (the filter's reason, None when the reply may be shown; a reward's choice is kept whether
    or not it is filtered) and ``differs`` (the models do not all pick the same sample for this prompt).
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
                         "differs": differs, "sample_idx": int(s.get("sample_idx", i)),
                         "filtered": s.get("filtered", None), "names": s.get("names", None),
                         "cluster": s.get("cluster", None)})
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
    base = first[[c for c in ("prompt_idx", "sample_idx", "user_text", "text", "category", "mention", "filtered",
                              "names", "item_id", "cluster") if c in first]]
    rewards = {}
    for rid, df in frames.items():
        df = df.copy()
        if "sample_idx" not in df:
            df["sample_idx"] = df.groupby("prompt_idx").cumcount()
        base = base.merge(df[key + ["reward"]].rename(columns={"reward": f"reward:{rid}"}), on=key, how="inner")
    for rid in frames:
        rewards[rid] = base[f"reward:{rid}"].to_numpy()
    return choices_from_samples(base.drop(columns=[f"reward:{r}" for r in frames]), rewards)


def prompt_clusters(choices: pd.DataFrame) -> dict[int, str] | None:
    """prompt_idx -> BBQ template of the choices (None when they carry no ``cluster``)."""
    if "cluster" not in choices or choices["cluster"].isna().all():
        return None
    return {int(k): str(v) for k, v in choices.groupby("prompt_idx")["cluster"].first().items()}


def ordered_prompts(choices: pd.DataFrame) -> list[int]:
    """Prompt ids with the prompts where the rewards' choices differ first (then in prompt order)."""
    first = choices.groupby("prompt_idx", sort=True)["differs"].first()
    return list(first[first].index) + list(first[~first].index)


def card(row: pd.Series | dict[str, Any]) -> dict[str, Any]:
    """What a card shows for one choice: ``{"text", "hidden", "reward", "names"}``. A filtered reply is
    hidden (``text`` None, ``hidden`` its reason); it stays in the data and is counted."""
    reason = row.get("filtered")
    hidden = None if reason is None or (isinstance(reason, float) and np.isnan(reason)) else str(reason)
    names = row.get("names")
    if names is None or (isinstance(names, float) and np.isnan(names)):
        names = f"names: {row.get('mention', '—')}"
    return {"text": None if hidden else str(row["text"]), "hidden": hidden,
            "reward": f"reward {float(row['reward_sd']):+.2f} sd", "names": str(names)}


def hidden_count(samples_or_choices: pd.DataFrame) -> int:
    """Rows the filter hides (a ``filtered`` reason set); 0 when the frame has no filter column."""
    if "filtered" not in samples_or_choices:
        return 0
    return int(samples_or_choices["filtered"].notna().sum())


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
    if not 1 <= int(n) <= 32:
        raise FaroError(f"n must be between 1 and 32, got {n}")
    say = progress or (lambda f, m: None)
    say(0.0, f"sampling {n} replies from the reference LM…")
    samples = generate([text], GenerationConfig(n=int(n), max_new_tokens=int(max_new_tokens), seed=int(seed)), lm=lm)
    from faro_core.policy.filter import filter_reason, prompt_words

    samples = samples.drop(columns=["seconds"]).assign(category="(typed prompt)", mention="—",
                                                       names="what it names is not known for a typed prompt")
    allow = prompt_words(text)
    samples["filtered"] = pd.Series([filter_reason(t, allow) for t in samples["text"]], dtype=object).to_numpy()
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
