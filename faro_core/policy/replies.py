"""The demo's policy replies: which prompts, which generation settings, and the shipped reply file.

The demo compares rewards on ``DEMO_N_PROMPTS`` ambiguous BBQ prompts of its template-held-out test split
(:func:`demo_prompt_items`: the split of ``FaroConfig(data="demo", skew=DEMO_SKEW,
test_frac=DEMO_TEST_FRAC)``, the demo runs' own; items with a derivable stereotyped answer; a seeded
round-robin over categories), with ``DEMO_GENERATION.n`` replies each from the embedded LM under
:data:`DEMO_GENERATION` (chosen by measurement, docs/POLICY.md).

Generating 800 replies takes ~15 min on 2 CPU cores, so the replies ship with the demo data as
``faro_core/assets/demo_bbq/cache/replies-<key>.parquet`` (columns ``item_id, prompt_idx, sample_idx, user_text, text,
n_tokens``), listed in the cache manifest with kind ``replies`` and verified by SHA-256 like the shipped
features (:mod:`faro_core.models.shipped`). ``<key>`` is :func:`replies_key`: the LM's
:func:`~faro_core.policy.lm.lm_key` and a hash of the generation settings, the prompt format and the
prompt selection, so a change to any of them makes the shipped file inapplicable (never silently used).

:func:`generate_replies` is resumable: replies are cached per prompt (``generate``'s own cache), and
``max_seconds`` stops between prompts, so a long pass can run in short chunks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import FaroError
from faro_core.policy.generate import GenerationConfig

DEMO_N_PROMPTS = 50
DEMO_PROMPT_SEED = 0
SELECTION_VERSION = "amb-test-rr-v1"
"""Bumped when :func:`demo_prompt_items` picks differently (part of :func:`replies_key`)."""
PROMPT_BATCH = 1
"""Prompts per decode loop: 1, so each prompt's replies depend on its own seed only (reproducible alone)."""

ON_TOPIC_SYSTEM = ("Answer the question in one short sentence. Say which person you mean, or say that it "
                   "cannot be determined from the context.")
DEMO_GENERATION = GenerationConfig(n=16, max_new_tokens=40, temperature=0.7, top_p=0.9, seed=0,
                                   system=ON_TOPIC_SYSTEM)
"""The demo's generation settings (docs/POLICY.md, "Generation settings", says why)."""

PROMPT_FORMATS = ("open", "options")
"""``open``: context + question, no answer options (free generation); ``options``: the same followed by the
item's three answers as possible answers (keeps a small LM on the two people)."""
DEMO_PROMPT_FORMAT = "options"

REPLY_COLUMNS = ["item_id", "prompt_idx", "sample_idx", "user_text", "text", "n_tokens"]


def round_robin(items: pd.DataFrame, n: int | None, seed: int = 0, by: str = "category") -> pd.DataFrame:
    """``n`` rows (all when None) in a seeded round-robin over ``by``: each group's rows in a seeded random
    order, then the first of every group, the second of every group, ... (groups in sorted order)."""
    rng = np.random.default_rng(seed)
    df = items.reset_index(drop=True).copy()
    df["_r"] = rng.random(len(df))
    df["_rank"] = df.sort_values("_r").groupby(by).cumcount()
    df = df.sort_values(["_rank", by, "_r"])
    if n is not None:
        df = df.head(int(n))
    return df.drop(columns=["_r", "_rank"]).reset_index(drop=True)


def config_test_item_ids(config: Any) -> set[str]:
    """Item ids of the test split of a training config (a ``FaroConfig``; for the demo,
    ``faro_core.studies.demo.demo_split_config()``, the demo runs' template-held-out split)."""
    from faro_core.train.inputs import load_training_data

    _, df, _ = load_training_data(config.resolved())
    return set(df.loc[df["split"] == "test", "item_id"].astype(str))


def ambiguous_with_roles(items: pd.DataFrame) -> pd.DataFrame:
    """Ambiguous items whose stereotyped (biased) answer is derivable: the only ones a reply's role is
    defined for."""
    amb = items["context_condition"].astype(str).str.startswith("ambig")
    return items[amb & items["biased_idx"].notna()].reset_index(drop=True)


def user_text(context: str, question: str, answers: Any = None, prompt_format: str = "open") -> str:
    """The user turn of a prompt in ``prompt_format`` (:data:`PROMPT_FORMATS`)."""
    from faro_core.policy.reference import bbq_user_text

    base = bbq_user_text(context, question)
    if prompt_format == "open":
        return base
    if prompt_format == "options":
        return base + " Possible answers: " + "; ".join(str(a) for a in answers) + "."
    raise FaroError(f"prompt format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")


def demo_prompt_items(test_ids: set[str], n_prompts: int | None = DEMO_N_PROMPTS, seed: int = DEMO_PROMPT_SEED,
                      items: pd.DataFrame | None = None, prompt_format: str = DEMO_PROMPT_FORMAT) -> pd.DataFrame:
    """The generation prompts: ambiguous items of ``test_ids`` with roles, round-robin over categories
    (:func:`round_robin`, ``seed``), with a ``user_text`` column (:func:`user_text` in ``prompt_format``).
    ``items`` defaults to the demo's BBQ items."""
    from faro_core.policy.evaluate import load_items

    items = load_items("demo") if items is None else items
    pool = ambiguous_with_roles(items[items["item_id"].astype(str).isin(test_ids)])
    if pool.empty:
        raise FaroError("no ambiguous test items with a stereotyped answer to prompt with")
    out = round_robin(pool, n_prompts, seed=seed)
    out["user_text"] = [user_text(c, q, a, prompt_format) for c, q, a in
                        zip(out["context"], out["question"], out["answers"])]
    return out


def settings_version(config: GenerationConfig, selection: str = SELECTION_VERSION,
                     prompt_format: str = DEMO_PROMPT_FORMAT) -> str:
    """12 hex of the generation settings, the prompt format, the batching and the prompt selection."""
    from faro_core.policy.reference import TEMPLATE_VERSION

    text = f"{config.key()}\x1f{TEMPLATE_VERSION}\x1f{prompt_format}\x1fbatch={PROMPT_BATCH}\x1f{selection}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def replies_key(lm: str | None = None, config: GenerationConfig = DEMO_GENERATION,
                selection: str = SELECTION_VERSION, prompt_format: str = DEMO_PROMPT_FORMAT) -> str:
    """The shipped-replies cache key: ``<lm_key>-<settings_version>``."""
    from faro_core.policy.lm import lm_key

    return f"{lm_key(lm)}-{settings_version(config, selection, prompt_format)}"


def generate_replies(prompts: pd.DataFrame, config: GenerationConfig = DEMO_GENERATION, lm: str | None = None,
                     max_seconds: float | None = None, progress: bool = True,
                     generate_fn: Callable[..., pd.DataFrame] | None = None) -> tuple[pd.DataFrame, int]:
    """Replies to ``prompts`` (rows with ``item_id, user_text``), one prompt at a time with a tqdm bar.

    Prompts already in the generation cache are read, not generated. With ``max_seconds``, stops starting
    new prompts once that much time has passed. Returns ``(replies, n_missing)``: the
    :data:`REPLY_COLUMNS` frame of the prompts done so far, and how many prompts are still missing
    (0 when complete). ``generate_fn`` stands in for :func:`~faro_core.policy.generate.generate` (tests).
    """
    from tqdm.auto import tqdm

    from faro_core.policy.generate import generate

    gen = generate_fn or generate
    texts = list(prompts["user_text"])
    t0 = time.time()
    frames = []
    bar = tqdm(total=len(texts), desc="prompts", unit="prompt", disable=not progress)
    for i, text in enumerate(texts):
        if max_seconds is not None and time.time() - t0 > max_seconds:
            break
        df = gen([text], config, lm=lm, prompt_batch=PROMPT_BATCH)
        frames.append(df.assign(prompt_idx=i, item_id=str(prompts["item_id"].iloc[i])))
        bar.update(1)
    bar.close()
    missing = len(texts) - len(frames)
    if not frames:
        return pd.DataFrame(columns=REPLY_COLUMNS), missing
    out = pd.concat(frames, ignore_index=True)
    out["n_tokens"] = out["n_tokens"].astype(int)
    return out[REPLY_COLUMNS], missing


def ship_replies(replies: pd.DataFrame, folder: Path, key: str, config: GenerationConfig = DEMO_GENERATION,
                 prompt_format: str = DEMO_PROMPT_FORMAT) -> Path:
    """(Maintainers) write ``replies-<key>.parquet`` into ``folder`` and add it to the folder's manifest
    (other entries kept, their hashes recomputed)."""
    import json

    from faro_core.io import write_parquet
    from faro_core.models.shipped import MANIFEST, write_manifest

    name = f"replies-{key}.parquet"
    write_parquet(folder / name, replies[REPLY_COLUMNS].reset_index(drop=True))
    old = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).exists() else {"files": []}
    keep = [{k: v for k, v in e.items() if k not in ("sha256", "bytes")} for e in old["files"]
            if e.get("kind") != "replies" and (folder / e["file"]).exists()]
    for e in old["files"]:  # older reply files are dropped from the folder too
        if e.get("kind") == "replies" and e["file"] != name:
            (folder / e["file"]).unlink(missing_ok=True)
    entry = {"file": name, "kind": "replies", "key": key, "rows": int(len(replies)),
             "prompts": int(replies["prompt_idx"].nunique()), "settings": asdict(config),
             "prompt_format": prompt_format, "selection": SELECTION_VERSION}
    write_manifest(folder, keep + [entry])
    return folder / name


def shipped_replies(key: str | None = None) -> pd.DataFrame | None:
    """The verified shipped replies for ``key`` (default: the embedded LM under :data:`DEMO_GENERATION`),
    or None when none match (a different LM or settings, a missing or edited file)."""
    from faro_core.models.shipped import shipped_files

    paths = shipped_files("replies", key or replies_key())
    for p in paths:
        try:
            df = pd.read_parquet(p)
        except Exception:  # verified bytes that do not parse: not trusted
            continue
        if set(REPLY_COLUMNS) <= set(df.columns):
            return df[REPLY_COLUMNS]
    return None


def attach_items(replies: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(samples, prompts)`` for reranking: ``prompts`` has one row per ``prompt_idx`` (the BBQ item of
    that prompt); ``samples`` gains ``category``. :class:`FaroError` when a reply's item is not in
    ``items``."""
    by_id = items.assign(item_id=items["item_id"].astype(str)).drop_duplicates("item_id").set_index("item_id")
    first = replies.drop_duplicates("prompt_idx").sort_values("prompt_idx")
    missing = sorted(set(first["item_id"].astype(str)) - set(by_id.index))
    if missing:
        raise FaroError(f"{len(missing)} replied-to item(s) are not in the BBQ items (e.g. {missing[0]})")
    if list(first["prompt_idx"]) != list(range(len(first))):
        raise FaroError("reply prompt_idx must run 0..P-1")
    prompts = by_id.loc[first["item_id"].astype(str)].reset_index()
    prompts["user_text"] = first["user_text"].to_numpy()
    samples = replies.copy()
    samples["category"] = prompts["category"].astype(str).to_numpy()[samples["prompt_idx"].to_numpy()]
    return samples.reset_index(drop=True), prompts


def summary_of(config: GenerationConfig, prompt_format: str = DEMO_PROMPT_FORMAT) -> dict[str, Any]:
    """The settings as JSON, with their version."""
    return {**asdict(config), "prompt_format": prompt_format, "version": settings_version(config, prompt_format=prompt_format)}
