"""Policy-level evaluation of reward runs on BBQ: the Gibbs policy of each reward over a β grid.

:func:`evaluate_policies` scores each BBQ item's 3 answers under π_ref (the reference LM) and under each
run's reward (``faro_core.models.load_scorer``), sweeps β and returns the JSON that ``faro policy``
prints and writes to each run's ``policy.json``::

    {"lm": ..., "split": ..., "n_items": ..., "normalize": "sum", "reward_units": "sd",
     "models": {"reference": {"betas": [...], "accuracy": [...], "s_amb": [...], "s_dis": [...],
                              "kl": [...], "expected_reward": [...], "argmax": {...}, "by_group": {...}},
                "<run_id>": {... same keys ..., "reward_bias": {...}, "reward_bias_by_group": {...},
                             "method": ..., "constraints": ..., "epsilon": ...}}}

β is in units of the run's reward standard deviation over the evaluated candidates (see
:func:`faro_core.policy.gibbs.standardize`); ``inf`` is π_ref.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import DataError, FaroError
from faro_core.paths import EMBEDDED_SOURCES, SHARED_DATA
from faro_core.policy.gibbs import DEFAULT_BETAS, policy_sweep, reward_bias, standardize
from faro_core.policy.lm import lm_name
from faro_core.policy.reference import reference_logprobs
from faro_core.store.runs import Run

SPLITS = ("train", "val", "test", "all")


def resolve_source(source: str | None) -> Path:
    """A BBQ source spec → a path: None/``demo`` (embedded demo), ``bbq`` (shared BBQ), or a path."""
    if source is None or str(source).lower() in EMBEDDED_SOURCES:
        return EMBEDDED_SOURCES["demo" if source is None else str(source).lower()]
    if str(source).lower() == "bbq":
        return SHARED_DATA / "bbq"
    p = Path(source).expanduser()
    if not p.exists():
        raise DataError(f"BBQ data {source!r} not found (give a BBQ .jsonl file or folder, 'bbq' or 'demo')")
    return p


def load_items(source: str | None = None) -> pd.DataFrame:
    """The BBQ item frame (``faro_core.data.bbq.load_bbq_items``) of a source spec (see :func:`resolve_source`)."""
    from faro_core.data.bbq import load_bbq_items

    items = load_bbq_items(resolve_source(source))
    need = ("item_id", "context", "question", "answers", "label", "unknown_idx", "biased_idx",
            "context_condition")
    missing = [c for c in need if c not in items.columns]
    if missing:
        raise DataError(f"BBQ items from {source!r} lack column(s) {missing}")
    items = items.reset_index(drop=True)
    items["item_id"] = items["item_id"].astype(str)
    return items


def run_data_source(run: Run) -> str | None:
    """The data source a run was trained on, read from its config (None if it does not say)."""
    cfg = run.config
    for key in ("data", "source", "data_source"):
        v = cfg.get(key)
        if isinstance(v, str) and v:
            return v
        if isinstance(v, dict) and isinstance(v.get("source"), str):
            return v["source"]
    return None


def split_item_ids(run: Run, split: str) -> set[str] | None:
    """Item ids of ``split`` in a run's ``scores.parquet`` (None if the run has no scores file)."""
    p = run.file("scores.parquet")
    if not p.exists():
        return None
    df = pd.read_parquet(p, columns=["item_id", "split"])
    return set(df.loc[df["split"].astype(str) == split, "item_id"].astype(str))


def select_items(items: pd.DataFrame, runs: Sequence[Run], split: str = "test", seed: int = 0,
                 limit: int | None = None) -> pd.DataFrame:
    """Items of ``split``: the runs' own split (from ``scores.parquet``, intersected over runs), else a
    seeded 15 % item sample (``split_by_item``'s default fractions are not reproducible without the pairs).
    ``limit`` keeps the first ``limit`` items of a seeded shuffle (for quick looks)."""
    if split not in SPLITS:
        raise FaroError(f"--split must be one of {SPLITS}, got {split!r}")
    if split != "all":
        ids: set[str] | None = None
        for run in runs:
            s = split_item_ids(run, split)
            if s is not None:
                ids = s if ids is None else ids & s
        if ids is not None:
            items = items[items["item_id"].isin(ids)]
            if len(items) == 0:
                raise DataError(f"none of the BBQ items are in the runs' {split!r} split "
                                "(was the run trained on other data? pass --data)")
        elif split == "test":
            rng = np.random.default_rng(seed)
            keep = rng.random(len(items)) < 0.15
            items = items[keep]
    items = items.reset_index(drop=True)
    if limit is not None and limit < len(items):
        order = np.random.default_rng(seed).permutation(len(items))[:limit]
        items = items.iloc[np.sort(order)].reset_index(drop=True)
    return items


def reward_prompt(items: pd.DataFrame) -> list[str]:
    """The prompt text a reward model reads for each item (the data layer's BBQ pair prompt)."""
    try:
        from faro_core.data import bbq as bbq_mod

        fn = getattr(bbq_mod, "item_prompt", None)
    except ImportError:
        fn = None
    if fn is not None:
        return [fn(row) for _, row in items.iterrows()]
    # the pair prompt of faro_core.data.bbq.items_to_pairs
    return [f"{c}\n{q}" for c, q in zip(items["context"], items["question"])]


def _load_scorer(run: Run) -> Any:
    from faro_core.models import load_scorer

    return load_scorer(run)


def run_scorer(run: Run) -> Any:
    """The run's reward scorer (``faro_core.models.load_scorer``); ``scorer.score(prompts, responses)``."""
    return _load_scorer(run)


def run_rewards(run: Run, items: pd.DataFrame, batch: int = 4096) -> np.ndarray:
    """Raw rewards ``[n_items, 3]`` of a run's reward model for each item's 3 answers."""
    scorer = run_scorer(run)
    prompts = reward_prompt(items)
    flat_p = [p for p in prompts for _ in range(3)]
    flat_r = [str(a) for ans in items["answers"] for a in ans]
    out = []
    for s in range(0, len(flat_p), batch):
        out.append(np.asarray(scorer.score(flat_p[s:s + batch], flat_r[s:s + batch]), dtype=np.float64))
    r = np.concatenate(out) if out else np.zeros(0)
    if r.shape != (len(flat_p),):
        raise FaroError(f"run {run.run_id}: scorer returned shape {r.shape}, expected ({len(flat_p)},)")
    return r.reshape(len(items), 3)


def _by_group_reward_bias(r: np.ndarray, items: pd.DataFrame, by: str) -> dict[str, dict[str, float]]:
    if by not in items.columns:
        return {}
    out = {}
    for g in sorted(items[by].dropna().astype(str).unique()):
        m = (items[by].astype(str) == g).to_numpy()
        out[g] = reward_bias(r[m], items[m].reset_index(drop=True))
    return out


def evaluate_policies(runs: Sequence[Run], items: pd.DataFrame, betas: Sequence[float] = DEFAULT_BETAS,
                      lm: str | None = None, normalize: str = "sum", by: str = "category",
                      log_ref: np.ndarray | None = None,
                      progress: Callable[[str], None] | None = None, dtype: str = "float32") -> dict[str, Any]:
    """Gibbs-policy metrics for π_ref and each run's reward over ``betas`` on ``items``.

    ``log_ref`` (``[n, 3]``) may be given to skip the LM (tests, benches that reuse it).
    Returns the JSON described in the module docstring.
    """
    say = progress or (lambda s: None)
    t0 = time.time()
    if log_ref is None:
        say(f"π_ref: scoring {len(items)} items × 3 answers with {lm_name(lm)}")
        log_ref = reference_logprobs(items, lm=lm, normalize=normalize, dtype=dtype)
    t_ref = time.time() - t0
    betas = sorted({float(b) for b in betas}, key=lambda b: (np.isinf(b), b))
    models: dict[str, Any] = {"reference": policy_sweep(log_ref, None, items, betas, by=by)}
    for run in runs:
        say(f"rewards of run {run.run_id}")
        raw = run_rewards(run, items)
        r = standardize(raw)
        entry = policy_sweep(log_ref, r, items, betas, by=by)
        entry["reward_bias"] = reward_bias(r, items)
        entry["reward_bias_by_group"] = _by_group_reward_bias(r, items, by)
        cfg = run.read("config.json", {}) or {}
        entry.update({k: cfg.get(k) for k in ("method", "constraints", "epsilon", "name")})
        entry["reward_sd"] = float(np.std(raw))
        models[run.run_id] = entry
    return {
        "lm": lm_name(lm),
        "normalize": normalize,
        "lm_dtype": dtype,
        "reward_units": "sd",
        "expectation": "expected values under π (argmax variant under 'argmax')",
        "n_items": int(len(items)),
        "n_amb": int(items["context_condition"].astype(str).str.startswith("ambig").sum()),
        "betas": betas,
        "seconds_reference": t_ref,
        "models": models,
    }


def write_policy(runs: Sequence[Run], result: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write ``policy.json`` into each run: the shared metadata, the reference and that run's entry."""
    meta = {k: v for k, v in result.items() if k != "models"}
    for run in runs:
        models = {"reference": result["models"]["reference"], run.run_id: result["models"][run.run_id]}
        run.write("policy.json", {**meta, **(extra or {}), "run_id": run.run_id, "models": models,
                                  "written": time.time()})
