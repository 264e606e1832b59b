"""Free generation from the reference LM, reranked by each reward (best-of-n and softmax reweighting).

Prompt set: open questions derived from BBQ items — the item's context and question as one user turn,
*without* the answer options (:func:`generation_prompts`; a seeded sample, ambiguous items first, spread
over categories; ``--data demo`` gives prompts from the demo data). For each prompt the LM draws ``n``
replies (temperature / top-p / max tokens configurable, seeded per prompt so a prompt's samples do not
depend on which other prompts are in the batch). Samples are cached as Parquet in
``cache_dir()/generations/<lm_key>/<hash>.parquet`` (hash of the prompt text + config).

Each sample is classified by which of the item's two groups it names (:func:`mention`): ``target`` (the
stereotyped group only), ``other`` (the other group only), ``both`` or ``neither``; ``biased`` marks a
sample naming only the group the BBQ bias direction points at (the target in a negative question, the
other group in a non-negative one).

Under each reward: **best-of-n** (the sample with the highest reward) and the **softmax-reweighted**
choice (a sample drawn ∝ exp(r/β) among the n, with r in sd units; reported as expected shares, exactly
as for the Gibbs policy — the n samples come from π_ref, so this is the self-normalized estimate of π_β).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import FaroError
from faro_core.io import write_parquet
from faro_core.paths import cache_dir
from faro_core.policy.lm import chat_prompt, end_of_turn_ids, lm_key, load_lm
from faro_core.policy.reference import bbq_user_text

MENTIONS = ("target", "other", "both", "neither")


@dataclass
class GenerationConfig:
    """Sampling settings. ``temperature`` > 0 samples (0 = greedy, all n samples identical);
    ``max_new_tokens`` in tokens; ``seed`` is combined with each prompt's hash; ``system``: a system turn
    placed before the user turn (None keeps the chat template's default)."""

    n: int = 4
    max_new_tokens: int = 48
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    system: str | None = None

    def key(self) -> str:
        """The cache key of these settings (``system`` only when set, so older caches stay valid)."""
        d = {k: v for k, v in asdict(self).items() if not (k == "system" and v is None)}
        return "|".join(f"{k}={v}" for k, v in sorted(d.items()))


def generation_prompts(items: pd.DataFrame, n_prompts: int, seed: int = 0,
                       ambiguous_first: bool = True) -> pd.DataFrame:
    """Pick ``n_prompts`` items (seeded) as open questions; adds a ``user_text`` column.

    Ambiguous items come first (there the only unbiased reply names nobody), round-robin over categories
    so each is represented.
    """
    if n_prompts < 1:
        raise FaroError("the number of prompts must be ≥ 1")
    rng = np.random.default_rng(seed)
    df = items.reset_index(drop=True).copy()
    df["_r"] = rng.random(len(df))
    amb = df["context_condition"].astype(str).str.startswith("ambig")
    df["_amb"] = (~amb).astype(int) if ambiguous_first else 0
    df["_rank"] = df.sort_values("_r").groupby(["_amb", "category"]).cumcount()
    df = df.sort_values(["_amb", "_rank", "_r"]).head(n_prompts)
    df["user_text"] = [bbq_user_text(c, q) for c, q in zip(df["context"], df["question"])]
    return df.drop(columns=["_r", "_amb", "_rank"]).reset_index(drop=True)


def _prompt_seed(seed: int, text: str) -> int:
    return (int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) + 1_000_003 * int(seed)) % (2**31 - 1)


def generate(user_texts: Sequence[str], config: GenerationConfig | None = None, lm: str | None = None,
             use_cache: bool = True, prompt_batch: int = 20,
             progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """``config.n`` sampled replies per user turn from the (chat-templated) LM.

    Prompts not in the cache are generated ``prompt_batch`` at a time (left-padded, ``n`` return sequences
    each; one decode loop for ``prompt_batch · n`` sequences is far faster on a CPU than one per prompt).
    The RNG is seeded from ``config.seed`` and the batch's prompt texts, so the same call gives the same
    samples. Returns one row per sample: ``prompt_idx, sample_idx, user_text, text, n_tokens, seconds``
    (wall time of the batch that produced it divided over its prompts; 0 when read from the cache).
    """
    import torch

    cfg = config or GenerationConfig()
    if cfg.n < 1 or cfg.max_new_tokens < 1:
        raise FaroError("n and max_new_tokens must be ≥ 1")
    root = cache_dir() / "generations" / lm_key(lm)
    texts = list(user_texts)
    paths = [root / (hashlib.sha256(f"{cfg.key()}\x1f{t}".encode()).hexdigest()[:32] + ".parquet")
             for t in texts]
    got: dict[int, pd.DataFrame] = {}
    if use_cache:
        for i, p in enumerate(paths):
            if p.exists():
                try:
                    got[i] = pd.read_parquet(p).assign(seconds=0.0)
                except Exception:  # a broken cache file is regenerated
                    pass
    todo = [i for i in range(len(texts)) if i not in got]
    if todo:
        model, tok = load_lm(lm)
        eos = end_of_turn_ids(tok)
        sample = cfg.temperature > 0
        reps = cfg.n if sample else 1
        for s in range(0, len(todo), max(1, prompt_batch)):
            chunk = todo[s:s + max(1, prompt_batch)]
            t0 = time.time()
            old_side = tok.padding_side
            tok.padding_side = "left"
            try:
                enc = tok([chat_prompt(tok, texts[i], system=cfg.system) for i in chunk], return_tensors="pt",
                          add_special_tokens=False, padding=True)
            finally:
                tok.padding_side = old_side
            torch.manual_seed(_prompt_seed(cfg.seed, "\x1e".join(texts[i] for i in chunk)))
            gen_kw: dict[str, Any] = {"do_sample": sample, "max_new_tokens": cfg.max_new_tokens,
                                      "num_return_sequences": reps, "eos_token_id": eos,
                                      "pad_token_id": tok.pad_token_id}
            if sample:
                gen_kw.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=0)
            with torch.inference_mode():
                out = model.generate(**enc, **gen_kw)
            new = out[:, enc["input_ids"].shape[1]:]
            decoded = tok.batch_decode(new, skip_special_tokens=True)
            stop = set(eos) | {tok.pad_token_id}
            ntoks = [int(next((j for j, t in enumerate(row.tolist()) if t in stop), len(row))) for row in new]
            secs = (time.time() - t0) / len(chunk)
            for ci, i in enumerate(chunk):
                rows = range(ci * reps, (ci + 1) * reps)
                txt = [decoded[r].strip() for r in rows]
                nt = [ntoks[r] for r in rows]
                if not sample:
                    txt, nt = txt * cfg.n, nt * cfg.n
                df = pd.DataFrame({"sample_idx": range(cfg.n), "user_text": texts[i], "text": txt,
                                   "n_tokens": nt})
                if use_cache:
                    try:
                        write_parquet(paths[i], df)
                    except OSError:
                        pass
                got[i] = df.assign(seconds=secs)
            if progress:
                progress(min(s + len(chunk), len(todo)), len(todo))
    frames = [got[i].assign(prompt_idx=i) for i in range(len(texts))]
    if not frames:
        return pd.DataFrame(columns=["prompt_idx", "sample_idx", "user_text", "text", "n_tokens", "seconds"])
    df = pd.concat(frames, ignore_index=True)
    return df[["prompt_idx", "sample_idx", "user_text", "text", "n_tokens", "seconds"]]


def _term_patterns(terms: Sequence[str]) -> re.Pattern[str] | None:
    words = []
    for t in terms:
        t = re.sub(r"^(the|a|an)\s+", "", str(t).strip(), flags=re.I)
        t = re.sub(r"\s+(one|person|guy|woman|man)$", "", t, flags=re.I) if len(t.split()) > 1 else t
        if len(t) >= 2:
            words.append(re.escape(t.lower()))
    if not words:
        return None
    return re.compile(r"\b(?:" + "|".join(sorted(set(words), key=len, reverse=True)) + r")(?:s|es)?\b")


def mention(text: str, item: pd.Series | dict[str, Any]) -> str:
    """Which of the item's groups a reply names: ``target``, ``other``, ``both`` or ``neither``.

    Group words are the item's answer terms and answer texts (without articles); the target is the answer
    at ``target_idx`` (the stereotyped group). An item without a target gives ``neither``/``other``
    comparisons against no target words, i.e. never ``target``.
    """
    tags = list(item["answer_tags"])
    terms = list(item.get("answer_terms", [None] * 3) or [None] * 3)
    answers = list(item["answers"])
    t_idx = item.get("target_idx")
    t_idx = None if t_idx is None or pd.isna(t_idx) else int(t_idx)
    groups = [i for i in range(3) if tags[i] is not None]
    tgt_words, oth_words = [], []
    for i in groups:
        words = [answers[i]] + ([terms[i]] if terms[i] else [])
        (tgt_words if i == t_idx else oth_words).extend(words)
    low = str(text).lower()
    pt, po = _term_patterns(tgt_words), _term_patterns(oth_words)
    has_t = bool(pt and pt.search(low))
    has_o = bool(po and po.search(low))
    return "both" if has_t and has_o else "target" if has_t else "other" if has_o else "neither"


def _is_biased(m: str, polarity: str) -> bool:
    if m == "stereotyped":  # the role classes of faro_core.policy.mentions already map through polarity
        return True
    return (m == "target" and polarity == "neg") or (m == "other" and polarity != "neg")


def mention_shares(mentions: np.ndarray, weights: np.ndarray, polarity: np.ndarray) -> dict[str, float]:
    """Weighted shares of each mention class and of biased replies; ``weights`` sum to 1 per prompt.

    Classes: :data:`MENTIONS` (group tags of :func:`mention`) or, when the mentions are role classes of
    :func:`faro_core.policy.mentions.classify`, its ``CLASSES`` (``biased`` is then the share naming the
    stereotyped person)."""
    from faro_core.policy.mentions import CLASSES

    present = set(mentions.tolist())
    roles = "target" not in present and bool(present & set(CLASSES))
    labels = CLASSES if roles else MENTIONS
    tot = float(weights.sum())
    out = {m: float(weights[mentions == m].sum() / tot) if tot else float("nan") for m in labels}
    if roles:
        biased = mentions == "stereotyped"
    else:
        biased = np.array([_is_biased(m, p) for m, p in zip(mentions, polarity)], dtype=bool)
    out["biased"] = float(weights[biased].sum() / tot) if tot else float("nan")
    return out


def rerank(samples: pd.DataFrame, prompts: pd.DataFrame, rewards: np.ndarray,
           betas: Sequence[float] = (1.0,), by: str = "category") -> dict[str, Any]:
    """Best-of-n and softmax-reweighted choice under one reward.

    ``samples``: rows of :func:`generate` with a ``mention`` column; ``prompts``: the prompt items (row i is
    ``prompt_idx`` i); ``rewards``: raw rewards ``[len(samples)]``. β in sd units of these rewards.
    Returns ``{"best_of_n": shares, "softmax": {β: shares}, "by_group": {g: {"samples", "best_of_n",
    "softmax"}}, "weights": {β: array}, "best": bool array}`` (shares as in :func:`mention_shares`).
    """
    r = np.asarray(rewards, dtype=np.float64)
    z = (r - r.mean()) / (r.std() if r.std() > 0 else 1.0)
    pidx = samples["prompt_idx"].to_numpy()
    n_p = int(pidx.max()) + 1 if len(pidx) else 0
    best = np.zeros(len(samples), dtype=bool)
    for p in range(n_p):
        rows = np.flatnonzero(pidx == p)
        best[rows[np.argmax(r[rows])]] = True
    weights: dict[float, np.ndarray] = {}
    for b in betas:
        b = float(b)
        if not np.isfinite(b) or b <= 0:
            continue
        w = np.zeros(len(samples))
        for p in range(n_p):
            rows = np.flatnonzero(pidx == p)
            e = z[rows] / b
            e = np.exp(e - e.max())
            w[rows] = e / e.sum()
        weights[b] = w
    mentions = samples["mention"].to_numpy()
    pol = prompts["question_polarity"].astype(str).to_numpy()[pidx]
    uniform = np.ones(len(samples))
    out: dict[str, Any] = {
        "best_of_n": mention_shares(mentions, best.astype(float), pol),
        "softmax": {str(b): mention_shares(mentions, w, pol) for b, w in weights.items()},
        "mean_reward_best": float(z[best].mean()) if best.any() else float("nan"),
        "mean_reward_samples": float(z.mean()) if len(z) else float("nan"),
    }
    if by in prompts.columns:
        grp = prompts[by].astype(str).to_numpy()[pidx]
        out["by_group"] = {}
        for g in sorted(set(grp)):
            m = grp == g
            out["by_group"][g] = {
                "n_prompts": int(len(set(pidx[m]))),
                "samples": mention_shares(mentions[m], uniform[m], pol[m]),
                "best_of_n": mention_shares(mentions[m], best[m].astype(float), pol[m]),
                "softmax": {str(b): mention_shares(mentions[m], w[m], pol[m]) for b, w in weights.items()},
            }
    out["best"] = best
    out["weights"] = weights
    return out


def label_samples(samples: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """``samples`` with ``mention`` (the role class of :func:`faro_core.policy.mentions.classify` where the
    prompt's item has a stereotyped answer, else the group tag of :func:`mention`), ``names`` (it in words,
    with the people's names) and ``filtered``
    (:func:`faro_core.policy.filter.filter_reason`, None when the reply may be shown)."""
    from faro_core.policy.filter import filter_reason, prompt_words
    from faro_core.policy.mentions import CLASS_WORDS, classify, in_words

    out = samples.copy()
    has_role = (prompts["biased_idx"].notna().to_numpy() if "biased_idx" in prompts
                else np.zeros(len(prompts), dtype=bool))
    allow = [prompt_words(r["context"], r["question"], *list(r["answers"])) for _, r in prompts.iterrows()]
    ment, filt, names = [], [], []
    for t, p in zip(out["text"], out["prompt_idx"]):
        item = prompts.iloc[int(p)]
        m = classify(t, item) if has_role[int(p)] else mention(t, item)
        ment.append(m)
        names.append(in_words(m, item) if has_role[int(p)] else CLASS_WORDS.get(m, f"names: {m}"))
        filt.append(filter_reason(t, allow[int(p)]))
    out["mention"] = ment
    out["names"] = names
    out["filtered"] = pd.Series(filt, dtype=object).to_numpy()
    return out
