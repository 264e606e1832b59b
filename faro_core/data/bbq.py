"""BBQ (Parrish et al. 2022) as preference data.

:func:`load_bbq_items` reads BBQ category ``.jsonl`` files (one file, or a folder of them) into one row per
item; :func:`items_to_pairs` turns items into preference pairs (chosen = the correct answer, rejected = each
wrong answer, so two pairs per item) with counterfactual twins (the two answers' group words swapped).

The stereotyped *target* answer is derived without ``additional_metadata.csv`` (not available): a non-unknown
answer is a target when its group tag, its group word (``answer_info[ans][0]``) or its answer text names one of
``additional_metadata.stereotyped_groups`` (compared case- and punctuation-insensitively; ``woman``/``man``
count as ``F``/``M``). For Nationality the tags are regions and the stereotyped groups are nationalities, so
the group word (``"Nigerian"``) is what matches. Exactly one of the two answers must match; when both or
neither do, the item has no target (``target_idx`` is ``<NA>``). The *biased* answer is the target in a
negative question and the other (non-unknown) answer in a non-negative one.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.data.twins import TermSwapper
from faro_core.errors import DataError

BBQ_FIELDS = ("example_id", "question_polarity", "context_condition", "category", "answer_info",
              "context", "question", "ans0", "ans1", "ans2", "label")
BBQ_STRATA = ["question_polarity", "context_condition"]
UNKNOWN_TAG = "unknown"
_ALIASES = {"woman": "f", "women": "f", "girl": "f", "female": "f", "man": "m", "men": "m", "boy": "m",
            "male": "m"}

ITEM_COLUMNS = ["item_id", "category", "example_id", "question_index", "context", "question", "answers",
                "answer_tags", "answer_terms", "label", "unknown_idx", "target_idx", "biased_idx",
                "question_polarity", "context_condition", "stereotyped_groups", "subcategory", "source_file"]


def _norm(s: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(s).lower())


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` from a ``.jsonl`` or ``.jsonl.gz`` file; blank lines are skipped.

    Malformed JSON, non-object lines and non-UTF-8 bytes raise :class:`DataError` naming file and line.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{path}: line {lineno} is not valid UTF-8 ({exc.reason} at byte "
                                    f"{exc.start})") from None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{path}: line {lineno} is not a JSON object")
                yield lineno, rec
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"{path}: file not found") from None
        raise DataError(f"{path}: cannot read ({exc})") from None


def bbq_files(path: str | Path) -> list[Path]:
    """The BBQ category files at ``path`` (a ``.jsonl`` file or a folder of them), sorted."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.name.endswith((".jsonl", ".jsonl.gz")))
        if not files:
            raise DataError(f"{p}: no BBQ .jsonl files in this folder")
        return files
    if not p.exists():
        raise DataError(f"{p}: file not found")
    return [p]


def looks_like_bbq(rec: dict[str, Any]) -> bool:
    return all(k in rec for k in ("context", "question", "ans0", "ans1", "ans2", "answer_info"))


def find_target(tags: list[str | None], terms: list[str], texts: list[str],
                stereotyped: list[str]) -> int | None:
    """Index of the answer naming a stereotyped group, or None when not exactly one answer does."""
    sg = {_norm(s) for s in stereotyped if s is not None}
    if not sg:
        return None
    hits = []
    for i, tag in enumerate(tags):
        if tag is None:
            continue
        nt = _norm(tag)
        cands = {nt, _ALIASES.get(nt, nt), _norm(terms[i]), _ALIASES.get(_norm(terms[i]), "")}
        text = _norm(re.sub(r"^(the|a|an)\s+", "", texts[i].strip(), flags=re.I))
        cands.add(text)
        if cands & sg:
            hits.append(i)
    if len(hits) == 1:
        return hits[0]
    if not hits:  # compound tags such as "F-Black" / "lowSES-Black": match on their parts
        part_hits = [i for i, tag in enumerate(tags)
                     if tag is not None and {_norm(p) for p in re.split(r"[-_]", tag)} & sg]
        if len(part_hits) == 1:
            return part_hits[0]
    return None


def _item_from_record(rec: dict[str, Any], path: Path, lineno: int) -> dict[str, Any]:
    missing = [k for k in BBQ_FIELDS if k not in rec]
    if missing:
        raise DataError(f"{path}: line {lineno} is not a BBQ item: missing field(s) {missing}")
    info = rec["answer_info"]
    answers, tags, terms = [], [], []
    for i in range(3):
        text = rec[f"ans{i}"]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}: line {lineno}: field 'ans{i}' has NaN or empty text")
        answers.append(text)
        ai = info.get(f"ans{i}") if isinstance(info, dict) else None
        if not isinstance(ai, list | tuple) or len(ai) < 2:
            raise DataError(f"{path}: line {lineno}: answer_info['ans{i}'] must be [text, tag]")
        tag = str(ai[1])
        tags.append(None if tag.lower() == UNKNOWN_TAG else tag)
        terms.append(str(ai[0]))
    for f in ("context", "question"):
        if not isinstance(rec[f], str) or not rec[f].strip():
            raise DataError(f"{path}: line {lineno}: field {f!r} has NaN or empty text")
    unknowns = [i for i, t in enumerate(tags) if t is None]
    if len(unknowns) != 1:
        raise DataError(f"{path}: line {lineno}: expected exactly one 'unknown' answer in answer_info, "
                        f"found {len(unknowns)}")
    try:
        label = int(rec["label"])
    except (TypeError, ValueError):
        raise DataError(f"{path}: line {lineno}: label {rec['label']!r} is not 0, 1 or 2") from None
    if label not in (0, 1, 2):
        raise DataError(f"{path}: line {lineno}: label {label} is not 0, 1 or 2")
    meta = rec.get("additional_metadata") or {}
    sg = meta.get("stereotyped_groups") or []
    if isinstance(sg, str):
        sg = [sg]
    target = find_target(tags, terms, answers, list(sg))
    polarity = str(rec["question_polarity"])
    biased = None
    if target is not None:
        if polarity == "neg":
            biased = target
        else:
            others = [i for i in range(3) if i != target and tags[i] is not None]
            biased = others[0] if len(others) == 1 else None
    category = str(rec["category"])
    return {
        "item_id": f"{category}-{rec['example_id']}",
        "category": category,
        "example_id": rec["example_id"],
        "question_index": str(rec.get("question_index", "")),
        "context": rec["context"],
        "question": rec["question"],
        "answers": answers,
        "answer_tags": tags,
        "answer_terms": terms,
        "label": label,
        "unknown_idx": unknowns[0],
        "target_idx": target,
        "biased_idx": biased,
        "question_polarity": polarity,
        "context_condition": str(rec["context_condition"]),
        "stereotyped_groups": [str(s) for s in sg],
        "subcategory": str(meta.get("subcategory", "None")),
        "source_file": f"{path.name}:{lineno}",
    }


def load_bbq_items(path: str | Path) -> pd.DataFrame:
    """One row per BBQ item from a category ``.jsonl`` file or a folder of them.

    Columns: ``item_id, category, example_id, question_index, context, question, answers (3 str),
    answer_tags (3, None = unknown), answer_terms, label, unknown_idx, target_idx, biased_idx,
    question_polarity, context_condition, stereotyped_groups, subcategory, source_file``.
    ``target_idx``/``biased_idx`` are nullable integers (``<NA>`` where no target could be derived).
    Duplicate ``(category, example_id)`` is a :class:`DataError`.
    """
    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for f in bbq_files(path):
        for lineno, rec in iter_jsonl(f):
            item = _item_from_record(rec, f, lineno)
            if item["item_id"] in seen:
                raise DataError(f"{f}: line {lineno}: duplicate BBQ id (category={item['category']!r}, "
                                f"example_id={item['example_id']!r}), first seen at {seen[item['item_id']]}")
            seen[item["item_id"]] = item["source_file"]
            rows.append(item)
    if not rows:
        raise DataError(f"{path}: the dataset is empty (no BBQ items)")
    df = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    for c in ("target_idx", "biased_idx"):
        df[c] = pd.array([None if v is None else int(v) for v in df[c]], dtype="Int64")
    return df


def target_coverage(items: pd.DataFrame) -> dict[str, Any]:
    """Share of items with a derived target, overall and per category."""
    has = items["target_idx"].notna()
    per = {str(k): {"items": int(len(g)), "with_target": int(g.notna().sum()),
                    "coverage": round(float(g.notna().mean()), 4)}
           for k, g in items.groupby("category")["target_idx"]}
    return {"items": int(len(items)), "with_target": int(has.sum()),
            "coverage": round(float(has.mean()), 4), "per_category": per}


def response_role(idx: Any, biased_idx: Any, unknown_idx: Any) -> str | None:
    """The stereotype role of answer ``idx`` of an item: ``"biased"`` (it is ``biased_idx``), ``None`` (it is the
    "unknown" answer, or the item has no derivable biased answer), else ``"counter"`` (the other group answer)."""
    if pd.isna(idx) or pd.isna(biased_idx) or pd.isna(unknown_idx):
        return None
    idx = int(idx)
    if idx == int(unknown_idx):
        return None
    return "biased" if idx == int(biased_idx) else "counter"


def item_prompt(item: Any) -> str:
    """The prompt a reward model reads for a BBQ item (a row of :func:`load_bbq_items`): context + question."""
    return f"{item['context']}\n{item['question']}"


def items_to_pairs(items: pd.DataFrame, source: str = "bbq", twins: bool = True) -> pd.DataFrame:
    """Preference pairs from BBQ items: chosen = correct answer, rejected = each wrong answer.

    Extra columns kept per pair (for skew, evaluation and policy): ``category, example_id, question_index,
    question_polarity, context_condition, label, chosen_idx, rejected_idx, target_idx, biased_idx,
    unknown_idx, target_group, chosen_role, rejected_role`` (:func:`response_role`; the response-level
    sensitive attribute ``--attribute role``). Pair-level ``group`` = the target's tag, else the category.
    """
    rows: list[dict[str, Any]] = []
    for it in items.itertuples(index=False):
        prompt = item_prompt({"context": it.context, "question": it.question})
        tgt = None if pd.isna(it.target_idx) else int(it.target_idx)
        bia = None if pd.isna(it.biased_idx) else int(it.biased_idx)
        target_group = it.answer_tags[tgt] if tgt is not None else None
        if twins:
            g = [i for i in range(3) if it.answer_tags[i] is not None]
            swap = TermSwapper([(it.answer_terms[g[0]], it.answer_terms[g[1]])])
            cf_prompt = swap(prompt)
            cf_answers = [swap(a) for a in it.answers]
        lab = int(it.label)
        for j in range(3):
            if j == lab:
                continue
            pair_id = f"{it.item_id}/{lab}-{j}"
            row = {
                "item_id": it.item_id, "pair_id": pair_id, "prompt": prompt,
                "chosen": it.answers[lab], "rejected": it.answers[j],
                "chosen_group": it.answer_tags[lab], "rejected_group": it.answer_tags[j],
                "group": target_group if target_group is not None else it.category,
                "gold": 1.0, "skewed": False,
                "twin_id": None, "cf_prompt": None, "cf_chosen": None, "cf_rejected": None,
                "source": f"{source}:{it.source_file}", "category": it.category,
                "example_id": it.example_id, "question_index": it.question_index,
                "question_polarity": it.question_polarity, "context_condition": it.context_condition,
                "label": lab, "chosen_idx": lab, "rejected_idx": j, "target_idx": tgt, "biased_idx": bia,
                "unknown_idx": int(it.unknown_idx), "target_group": target_group,
                "chosen_role": response_role(lab, bia, it.unknown_idx),
                "rejected_role": response_role(j, bia, it.unknown_idx),
            }
            if twins:
                row.update(twin_id=f"{pair_id}~cf", cf_prompt=cf_prompt, cf_chosen=cf_answers[lab],
                           cf_rejected=cf_answers[j])
            rows.append(row)
    df = pd.DataFrame(rows)
    for c in ("target_idx", "biased_idx"):
        df[c] = pd.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else int(v)
                          for v in df[c]], dtype="Int64")
    return df
