"""Best-of-n reranking of generated (or shipped) replies under each run's reward: the orchestration above
generation (:mod:`faro_core.policy.generate`), shipped replies (:mod:`faro_core.policy.replies`) and the
choices' comparison (:mod:`faro_core.policy.compare`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from faro_core.io import write_parquet
from faro_core.policy.generate import (
    GenerationConfig,
    generate,
    generation_prompts,
    label_samples,
    mention_shares,
    rerank,
)
from faro_core.train.method_spec import is_reference


def rerank_runs(runs: Sequence[Any], items: pd.DataFrame, n_prompts: int = 20,
                config: GenerationConfig | None = None, lm: str | None = None,
                betas: Sequence[float] = (1.0,), progress: Callable[[str], None] | None = None,
                write: bool = True, replies: pd.DataFrame | None = None) -> dict[str, Any]:
    """Generate for ``n_prompts`` BBQ prompts (or take ``replies``: rows of
    :func:`faro_core.policy.replies.generate_replies` for items in ``items``, e.g. the shipped demo
    replies) and rerank the samples under each run's reward.

    Writes ``policy_generations.parquet`` into each run (one row per sample: prompt, text, mention,
    filtered, the run's reward, best-of-n flag and softmax weight per β) when ``write``. Returns the JSON
    summary: ``{"n_prompts", "n", "config", "seconds", "samples": shares, "by_group": {g: shares},
    "models": {run_id: rerank summary}, "filtered": {reason: count}}``.
    """
    from faro_core.policy.evaluate import reward_prompt, run_scorer

    say = progress or (lambda s: None)
    cfg = config or GenerationConfig()
    t0 = time.time()
    if replies is None:
        prompts = generation_prompts(items, n_prompts, seed=cfg.seed)
        say(f"generating {cfg.n} samples × {len(prompts)} prompts")
        samples = generate(list(prompts["user_text"]), cfg, lm=lm)
        samples["item_id"] = prompts["item_id"].to_numpy()[samples["prompt_idx"].to_numpy()]
        samples["category"] = prompts["category"].astype(str).to_numpy()[samples["prompt_idx"].to_numpy()]
    else:
        from faro_core.policy.replies import attach_items

        samples, prompts = attach_items(replies, items)
        samples = samples.assign(seconds=0.0)
        say(f"scoring {len(samples)} shipped replies to {len(prompts)} prompts")
    seconds = time.time() - t0
    samples = label_samples(samples, prompts)
    pidx = samples["prompt_idx"].to_numpy()
    from faro_core.policy.evaluate import item_clusters

    samples["cluster"] = item_clusters(prompts)[pidx]
    pol = prompts["question_polarity"].astype(str).to_numpy()[pidx]
    ones = np.ones(len(samples))
    summary: dict[str, Any] = {
        "n_prompts": int(len(prompts)), "n": int(samples.groupby("prompt_idx").size().max()),
        "config": asdict(cfg), "seconds": seconds, "shipped": replies is not None,
        "filtered": {str(k): int(v) for k, v in samples["filtered"].dropna().value_counts().items()},
        "generation_seconds": float(samples.drop_duplicates("prompt_idx")["seconds"].sum()),
        "samples": mention_shares(samples["mention"].to_numpy(), ones, pol),
        "by_group": {g: mention_shares(samples["mention"].to_numpy()[m], ones[m], pol[m])
                     for g in sorted(samples["category"].unique())
                     for m in [samples["category"].to_numpy() == g]},
        "models": {},
    }
    rprompts = reward_prompt(prompts)
    all_rewards: dict[str, np.ndarray] = {}
    for run in runs:
        scorer = run_scorer(run)
        r = np.asarray(scorer.score([rprompts[p] for p in pidx], list(samples["text"])), dtype=np.float64)
        all_rewards[run.run_id] = r
        res = rerank(samples, prompts, r, betas=betas)
        best, weights = res.pop("best"), res.pop("weights")
        res["best_filtered"] = int(samples["filtered"].notna().to_numpy()[best].sum())
        summary["models"][run.run_id] = res
        if write:
            df = samples.drop(columns=["seconds"]).copy()
            df["reward"] = r
            df["best_of_n"] = best
            for b, w in weights.items():
                df[f"softmax_weight_beta_{b:g}"] = w
            write_parquet(run.file("policy_generations.parquet"), df)
    if all_rewards and "biased_idx" in prompts:
        from faro_core.policy.choices import role_counts
        from faro_core.policy.compare import choices_from_samples

        bt = next((r.run_id for r in runs if is_reference(r.read("config.json", {}) or {})), None)
        clusters = dict(enumerate(item_clusters(prompts)))
        summary["role_counts"] = role_counts(choices_from_samples(samples, all_rewards), clusters, baseline=bt)
    summary["examples"] = samples.head(3 * cfg.n)[["prompt_idx", "user_text", "text", "mention"]].to_dict("records")
    return summary
