"""Open-ended prompts per group (BOLD, Dhamala et al. 2021, CC BY-SA 4.0) on the policy side.

BOLD's prompt files (``{domain}_prompt.json``: group -> person/topic -> sentence beginnings) give a fixed,
seeded sample of ``per_group`` prompts per group (:func:`bold_prompts`; gender: American_actors /
American_actresses, race: four groups, religious_ideology: seven). For each prompt the reference LM draws
``n`` continuations (:func:`faro_core.policy.generate.generate`, user turn ``"Complete the sentence: "`` +
the beginning). Each run's reward scores the full sentence (beginning + continuation) as the response to
:data:`REWARD_PROMPT`; best-of-n keeps the highest-reward continuation per prompt.

Reported per reward and domain (:func:`bold_rerank`): per group, the mean reward of the chosen
continuations and of all samples, in sd units of that reward over all samples (``z = (r - mean) / sd``),
with a bootstrap 95% interval over prompts, and the **gap** = max - min of the groups' chosen means, with
its bootstrap interval (groups resampled independently).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import DataError

DOMAINS = {"gender": "gender_prompt.json", "race": "race_prompt.json", "religion": "religious_ideology_prompt.json"}
GENERATION_PREFIX = "Complete the sentence: "
REWARD_PROMPT = "Complete the sentence."
N_BOOT = 1000


def bold_prompts(folder: str | Path, domains: Sequence[str] = tuple(DOMAINS), per_group: int = 4,
                 seed: int = 0) -> pd.DataFrame:
    """A seeded sample of ``per_group`` prompts per group: columns ``domain, group, person, prompt``.

    Groups with fewer prompts contribute all of theirs. A sentence listed twice in a group counts once.
    The sample for a group depends only on the seed and the group's prompts (sorted), not on the other
    groups.
    """
    d = Path(folder)
    rows = []
    for dom in domains:
        if dom not in DOMAINS:
            raise DataError(f"unknown BOLD domain {dom!r} (have: {sorted(DOMAINS)})")
        path = d / DOMAINS[dom]
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: file not found (a BOLD prompts folder has {DOMAINS[dom]})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg})") from None
        for gi, (group, people) in enumerate(sorted(obj.items())):
            first: dict[str, str] = {}  # BOLD lists some sentences twice in a group: each text once
            for person, ps in sorted(people.items()):
                for p in ps:
                    if str(p).strip():
                        first.setdefault(str(p).strip(), str(person))
            cands = sorted((person, text) for text, person in first.items())
            rng = np.random.default_rng([seed, len(dom), gi, len(cands)])
            pick = rng.choice(len(cands), size=min(per_group, len(cands)), replace=False) if cands else []
            for i in sorted(int(x) for x in pick):
                rows.append({"domain": dom, "group": group, "person": cands[i][0], "prompt": cands[i][1]})
    if not rows:
        raise DataError(f"{d}: no BOLD prompts")
    return pd.DataFrame(rows)


def _ci(x: np.ndarray, seed: int, n_boot: int = N_BOOT) -> tuple[float, float]:
    """BCa bootstrap interval of a mean (:func:`faro_core.intervals.mean_interval`)."""
    from faro_core.intervals import mean_interval

    if len(x) == 0:
        return float("nan"), float("nan")
    ci = mean_interval(x, n_boot=n_boot, seed=seed)
    return ci["lo"], ci["hi"]


def bold_stats(prompts: pd.DataFrame, samples: pd.DataFrame, rewards: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Best-of-n per prompt and the per-group / gap numbers of the module docstring for one reward."""
    r = np.asarray(rewards, dtype=float)
    z = (r - r.mean()) / (r.std() if r.std() > 0 else 1.0)
    pidx = samples["prompt_idx"].to_numpy()
    n_p = len(prompts)
    chosen = np.full(n_p, np.nan)
    mean_all = np.full(n_p, np.nan)
    best_rows = []
    for p in range(n_p):
        rows = np.flatnonzero(pidx == p)
        if len(rows):
            b = rows[np.argmax(z[rows])]
            best_rows.append(b)
            chosen[p] = z[b]
            mean_all[p] = z[rows].mean()
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for dom, gdf in prompts.groupby("domain", sort=False):
        groups: dict[str, Any] = {}
        per: dict[str, np.ndarray] = {}
        gi_seed = 0
        for g, sub in gdf.groupby("group"):
            idx = sub.index.to_numpy()
            c = chosen[idx][~np.isnan(chosen[idx])]
            per[str(g)] = c
            lo, hi = _ci(c, seed + gi_seed)
            gi_seed += 1
            groups[str(g)] = {"n_prompts": int(len(c)), "chosen_mean": float(c.mean()) if len(c) else None,
                              "chosen_lo": lo, "chosen_hi": hi,
                              "samples_mean": float(np.nanmean(mean_all[idx])) if len(idx) else None}
        means = {g: v.mean() for g, v in per.items() if len(v)}
        gap = float(max(means.values()) - min(means.values())) if len(means) > 1 else None
        from faro_core.intervals import gap_of_means_interval

        gap_ci = gap_of_means_interval([v for v in per.values() if len(v)], n_boot=N_BOOT, seed=seed)
        # the gap with no group effect: group labels permuted over the domain's prompts
        vals = np.concatenate([v for v in per.values() if len(v)]) if per else np.zeros(0)
        sizes = [len(v) for v in per.values() if len(v)]
        null = []
        for _ in range(N_BOOT if len(sizes) > 1 else 0):
            perm = rng.permutation(vals)
            ms = [c.mean() for c in np.split(perm, np.cumsum(sizes)[:-1])]
            null.append(max(ms) - min(ms))
        out[str(dom)] = {"groups": groups, "gap": gap,
                         "gap_lo": gap_ci["lo"] if gap is not None else None,
                         "gap_hi": gap_ci["hi"] if gap is not None else None,
                         **({"gap_interval_note": gap_ci["why"]} if gap_ci.get("why") else {}),
                         "gap_null_median": float(np.median(null)) if null else None,
                         "gap_null_95": float(np.quantile(null, 0.95)) if null else None,
                         "gap_p_value": float(np.mean(np.asarray(null) >= gap)) if null and gap is not None else None,
                         "highest": max(means, key=means.get) if means else None,
                         "lowest": min(means, key=means.get) if means else None}
    return {"domains": out, "best_rows": best_rows}


def bold_rerank(runs: Sequence[Any], folder: str | Path, domains: Sequence[str] = tuple(DOMAINS),
                per_group: int = 4, config: Any = None, lm: str | None = None, seed: int = 0,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Generate for the BOLD sample and rerank best-of-n under each run's reward (see the module docstring).

    Returns ``{"config", "per_group", "n_prompts", "generation_seconds", "prompts": [...],
    "models": {run_id: {"domains": {domain: {"groups": {g: {...}}, "gap", "gap_lo", "gap_hi"}}}},
    "examples"}``. ``config``: a :class:`~faro_core.policy.generate.GenerationConfig` (default n=4,
    32 new tokens).
    """
    from faro_core.policy.evaluate import run_scorer
    from faro_core.policy.generate import GenerationConfig, generate

    cfg = config or GenerationConfig(n=4, max_new_tokens=32, seed=seed)
    prompts = bold_prompts(folder, domains, per_group=per_group, seed=seed)
    t0 = time.time()
    # a text in two groups (BOLD has a few) is generated once, so a run and its cached rerun agree
    texts = list(dict.fromkeys(prompts["prompt"]))
    gen = generate([GENERATION_PREFIX + p for p in texts], cfg, lm=lm, progress=progress)
    gen_s = time.time() - t0
    where = {t: i for i, t in enumerate(texts)}
    samples = pd.concat([gen[gen["prompt_idx"] == where[t]].assign(prompt_idx=k)
                         for k, t in enumerate(prompts["prompt"])], ignore_index=True)
    full = [f"{prompts['prompt'].iloc[p]} {t}".strip() for p, t in zip(samples["prompt_idx"], samples["text"])]
    out: dict[str, Any] = {"config": asdict(cfg), "per_group": per_group, "n_prompts": int(len(prompts)),
                           "generation_seconds": round(gen_s, 1), "models": {},
                           "groups": prompts.groupby(["domain", "group"]).size().rename("n").reset_index()
                           .to_dict("records")}
    for run in runs:
        scorer = run_scorer(run)
        r = np.asarray(scorer.score([REWARD_PROMPT] * len(full), full), dtype=float)
        res = bold_stats(prompts, samples, r, seed=seed)
        best = res.pop("best_rows")
        res["examples"] = [{"group": prompts["group"].iloc[int(samples["prompt_idx"].iloc[b])], "text": full[b]}
                           for b in best[:3]]
        out["models"][run.run_id] = res
    return out


def bold_table(result: dict[str, Any], names: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (run, domain, group) with the chosen mean and interval, plus the domain's gap."""
    rows = []
    for rid, res in result["models"].items():
        for dom, d in res["domains"].items():
            for g, v in d["groups"].items():
                rows.append({"model": (names or {}).get(rid, rid), "domain": dom, "group": g, "n": v["n_prompts"],
                             "chosen_mean": v["chosen_mean"], "lo": v["chosen_lo"], "hi": v["chosen_hi"],
                             "samples_mean": v["samples_mean"], "gap": d["gap"], "gap_lo": d["gap_lo"],
                             "gap_hi": d["gap_hi"]})
    return pd.DataFrame(rows)
