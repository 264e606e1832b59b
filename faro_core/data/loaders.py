"""Loaders: every supported source becomes a :class:`~faro_core.data.schema.PreferenceData`.

Formats (``format=``; auto-detected from the path when not given):

- ``demo``: the embedded BBQ-format demo items (``faro_core/assets/demo_bbq/``); also ``source=None`` / ``"demo"``.
- ``bbq``: a folder of BBQ category ``.jsonl`` files, or one category file (see :mod:`faro_core.data.bbq`).
- ``crows``: CrowS-Pairs CSV. One pair per row: prompt = :data:`~faro_core.data.benchmarks.CROWS_PROMPT`, chosen = ``sent_less`` (the
  less stereotypical sentence, preferred as the fair label), rejected = ``sent_more``; group = category =
  ``bias_type``; ``stereo_antistereo`` kept; gold NaN (an audit set, not ground truth).
- ``hh``: Anthropic HH-RLHF ``.jsonl``/``.jsonl.gz`` (``chosen``/``rejected`` full dialogues), a file or a
  folder of them. The shared dialogue prefix up to the last ``Assistant:`` is the prompt, the rest of each
  dialogue the response. No groups (used to measure quality retention).
- ``trl``: TRL's preference format: ``prompt``/``chosen``/``rejected`` as strings, or conversational lists
  of ``{"role", "content"}`` messages (also the implicit-prompt form with no ``prompt``), in JSONL/JSON/
  CSV/Parquet.
- ``csv`` / ``jsonl`` / ``parquet``: any table with a column mapping ``{our name: file column}``.
- ``hub``: a Hugging Face hub id (``owner/name`` or ``owner/name:split``) through ``datasets.load_dataset``;
  without network this fails fast with a :class:`DataError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.data import bbq as bbq_mod
from faro_core.data.benchmarks import load_crows, load_hh, split_dialogue
from faro_core.data.hub import hub_reachable, offline
from faro_core.data.readers import TABLE_EXTENSIONS, check_unique, first_record, is_messages, read_table
from faro_core.data.schema import PreferenceData
from faro_core.data.skew import apply_skew
from faro_core.data.twins import add_text_twins
from faro_core.errors import DataError
from faro_core.paths import EMBEDDED_SOURCES

FORMATS = ("bbq", "crows", "hh", "trl", "csv", "jsonl", "parquet", "demo", "hub")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]+)?$")


# ---------------------------------------------------------------------------------------------- detection
def detect_format(source: str | Path) -> str:
    """Guess the format of a path (or hub id) from its name and first rows/columns."""
    if source is None or str(source) in EMBEDDED_SOURCES:
        return "demo"
    p = Path(source)
    if not p.exists():
        if _HUB_ID.match(str(source)) and not str(source).lower().endswith(TABLE_EXTENSIONS) and "/" in str(source):
            return "hub"
        raise DataError(f"{source}: file not found (and not a hub id of the form owner/name)")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.name.endswith((".jsonl", ".jsonl.gz")))
        if not files:
            raise DataError(f"{p}: no .jsonl / .jsonl.gz files in this folder; cannot tell its format")
        rec = first_record(files[0])
        if rec is not None and bbq_mod.looks_like_bbq(rec):
            return "bbq"
        if rec is not None and set(rec) >= {"chosen", "rejected"} and "prompt" not in rec:
            return "hh"
        raise DataError(f"{p}: a folder must hold BBQ or HH-RLHF .jsonl files; {files[0].name} is neither")
    name = p.name.lower()
    if name.endswith((".csv", ".tsv")):
        try:
            cols = list(pd.read_csv(p, nrows=0, sep="\t" if name.endswith(".tsv") else ",").columns)
        except UnicodeDecodeError:
            raise DataError(f"{p}: not valid UTF-8") from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{p}: the dataset is empty (no rows)") from None
        except pd.errors.ParserError as exc:
            raise DataError(f"{p}: malformed CSV ({str(exc).strip()})") from None
        if {"sent_more", "sent_less"} <= set(cols):
            return "crows"
        return "trl" if {"prompt", "chosen", "rejected"} <= set(cols) else "csv"
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        if name.endswith(".json"):
            df = read_table(p)
            rec = df.iloc[0].to_dict()
        else:
            rec = first_record(p)
            if rec is None:
                raise DataError(f"{p}: the dataset is empty (no rows)")
        if bbq_mod.looks_like_bbq(rec):
            return "bbq"
        if {"chosen", "rejected"} <= set(rec):
            if "prompt" in rec or is_messages(rec["chosen"]):
                return "trl"
            if isinstance(rec["chosen"], str) and "Assistant:" in rec["chosen"]:
                return "hh"
            return "trl"
        if {"sent_more", "sent_less"} <= set(rec):
            return "crows"
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        cols = set(read_table(p).columns)
        return "trl" if {"chosen", "rejected"} <= cols else "parquet"
    raise DataError(f"{p}: cannot tell the format from the file name; pass format= one of {list(FORMATS)}")


# ---------------------------------------------------------------------------------------------- formats
def load_bbq(path: str | Path, twins: bool = True, name: str = "bbq") -> PreferenceData:
    """BBQ items (file or folder) as pairs; strata ``question_polarity, context_condition``."""
    items = bbq_mod.load_bbq_items(path)
    df = bbq_mod.items_to_pairs(items, source=name, twins=twins)
    cov = bbq_mod.target_coverage(items)
    return PreferenceData(df, name=name, strata=list(bbq_mod.BBQ_STRATA),
                          meta={"source": str(path), "format": "bbq", "items": len(items),
                                "target_coverage": cov})


def load_demo(twins: bool = True, name: str = "demo") -> PreferenceData:
    """Data shipped with Faro: ``"demo"`` (``faro_core/assets/demo_bbq/``, a subset of BBQ) or ``"demo-mini"``
    (``faro_core/assets/demo_mini/``, 512 self-made BBQ-format items)."""
    if name not in EMBEDDED_SOURCES:
        raise DataError(f"unknown embedded data {name!r}; expected one of {sorted(EMBEDDED_SOURCES)}")
    folder = EMBEDDED_SOURCES[name]
    if not folder.is_dir():
        raise DataError(f"{folder}: the embedded {name!r} data folder is missing (reinstall Faro)")
    data = load_bbq(folder, twins=twins, name=name)
    data.meta["format"] = "demo"
    return data


def _render_messages(v: Any, what: str, where: str) -> str:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, str):
        return v
    if is_messages(v):
        parts = []
        for m in v:
            role = str(m.get("role", "")).strip()
            content = m.get("content")
            if isinstance(content, list):  # multimodal content parts: keep the text parts
                content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
            parts.append(f"{role.capitalize()}: {content}" if role else str(content))
        return "\n\n".join(parts)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    raise DataError(f"{where}: column {what!r} must be a string or a list of {{role, content}} messages, "
                    f"got {type(v).__name__}")


def _response_text(v: Any, what: str, where: str) -> str:
    """A response: a string, or a list of messages (a single assistant message gives its content)."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if is_messages(v) and len(v) == 1:
        c = v[0].get("content")
        return c if isinstance(c, str) else _render_messages(v, what, where)
    return _render_messages(v, what, where)


def _trl_frame(raw: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in ("chosen", "rejected") if c not in raw.columns]
    if missing:
        raise DataError(f"{where}: not TRL preference data: missing column(s) {missing}; "
                        f"present: {sorted(map(str, raw.columns))}")
    rows = []
    for i, r in enumerate(raw.to_dict("records")):
        ch, rj = r["chosen"], r["rejected"]
        if "prompt" in raw.columns:
            prompt = _render_messages(r["prompt"], "prompt", f"{where}: row {i}")
            chosen = _response_text(ch, "chosen", f"{where}: row {i}")
            rejected = _response_text(rj, "rejected", f"{where}: row {i}")
        elif is_messages(ch) and is_messages(rj):  # implicit prompt: shared leading messages
            ch, rj = list(ch), list(rj)
            k = 0
            while k < min(len(ch), len(rj)) - 1 and ch[k] == rj[k]:
                k += 1
            prompt = _render_messages(ch[:k], "prompt", f"{where}: row {i}")
            chosen = _response_text(ch[k:], "chosen", f"{where}: row {i}")
            rejected = _response_text(rj[k:], "rejected", f"{where}: row {i}")
        else:
            prompt, chosen, rejected = split_dialogue(str(ch), str(rj))
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    df = pd.DataFrame(rows, index=raw.index)
    for c in raw.columns:
        if c not in ("prompt", "chosen", "rejected"):
            df[c] = raw[c]
    return df


def _finish_table(df: pd.DataFrame, where: str, fmt: str, source: str) -> PreferenceData:
    n = len(df)
    if n == 0:
        raise DataError(f"{where}: the dataset is empty (no rows)")
    if "pair_id" not in df.columns:
        df["pair_id"] = [f"{fmt}-{i}" for i in range(n)]
    else:
        check_unique(df, "pair_id", where, "pair_id")
    if "item_id" not in df.columns:
        df["item_id"] = df["pair_id"].astype(str)
    df["source"] = f"{fmt}:{source}"
    if "category" not in df.columns:
        df["category"] = fmt
    # text sanity with the file's row number (normalize() would report the frame row)
    for c in ("prompt", "chosen", "rejected"):
        bad = df[c].isna() | ~df[c].map(lambda v: isinstance(v, str) and v.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{where}: column {c!r} has NaN or empty text at row {row} "
                            f"({int(bad.sum())} such rows)")
    return PreferenceData(df.reset_index(drop=True), name=fmt, meta={"source": source, "format": fmt})


def load_trl(path: str | Path, columns: dict[str, str] | None = None) -> PreferenceData:
    """TRL preference format (standard or conversational) from JSONL/JSON/CSV/Parquet (optional mapping)."""
    p = Path(path)
    raw = apply_column_map(read_table(p), columns, str(p))
    return _finish_table(_trl_frame(raw, str(p)), str(p), "trl", str(p))


def apply_column_map(raw: pd.DataFrame, columns: dict[str, str] | None, where: str) -> pd.DataFrame:
    """Rename file columns to ours: ``columns`` maps our name → the file's column name."""
    if not columns:
        return raw
    if not isinstance(columns, dict):
        raise DataError(f"{where}: columns must be a mapping {{our name: file column}}, got {columns!r}")
    absent = {ours: theirs for ours, theirs in columns.items() if theirs not in raw.columns}
    if absent:
        ours, theirs = next(iter(absent.items()))
        raise DataError(f"{where}: mapped column {theirs!r} (for {ours!r}) is absent; "
                        f"file columns: {sorted(map(str, raw.columns))}")
    df = raw.copy()
    for ours, theirs in columns.items():
        df[ours] = raw[theirs]
    return df


def load_table(path: str | Path, fmt: str, columns: dict[str, str] | None = None) -> PreferenceData:
    """Generic CSV / JSONL / Parquet preference pairs, with an optional column mapping."""
    p = Path(path)
    raw = read_table(p)
    df = apply_column_map(raw, columns, str(p))
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in df.columns]
    if missing:
        raise DataError(f"{p}: missing column(s) {missing}; map them with columns={{ours: file column}} "
                        f"(file columns: {sorted(map(str, raw.columns))})")
    if any(df[c].map(is_messages).any() for c in ("prompt", "chosen", "rejected")):
        df = _trl_frame(df, str(p))
    return _finish_table(df, str(p), fmt, str(p))


def load_hub(hub_id: str, columns: dict[str, str] | None = None) -> PreferenceData:
    """A Hugging Face hub dataset (``owner/name`` or ``owner/name:split``) via ``datasets.load_dataset``.

    Offline (``HF_HUB_OFFLINE=1``) only the local cache is tried; otherwise the hub host is probed with a
    short timeout first, so that no network gives a :class:`DataError` in seconds instead of a hang.
    """
    name, _, split = str(hub_id).partition(":")
    if not offline() and not hub_reachable():
        raise DataError(f"hub id {name!r} (no such local path either): the Hugging Face hub cannot be "
                        f"reached (no network?); pass a local file or folder, or set HF_HUB_OFFLINE=1 to use "
                        f"the cache")
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a hard requirement
        raise DataError("loading a hub id needs the 'datasets' package") from None
    try:
        ds = datasets.load_dataset(name, split=split or None)
    except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"hub id {name!r}: cannot load ({type(exc).__name__}: {msg[:200]})") from None
    if not split and hasattr(ds, "keys"):
        keys = list(ds.keys())
        pick = "test" if "test" in keys else "train" if "train" in keys else keys[0]
        ds = ds[pick]
        split = pick
    raw = ds.to_pandas()
    where = f"{name}:{split}"
    raw = apply_column_map(raw, columns, where)
    if len(raw) and bbq_mod.looks_like_bbq(raw.iloc[0].to_dict()):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "hub.jsonl"
            raw.to_json(f, orient="records", lines=True, force_ascii=False)
            data = load_bbq(f, name="bbq")
        data.meta["source"] = where
        return data
    if {"sent_more", "sent_less", "bias_type"} <= set(raw.columns):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "hub.csv"
            raw.to_csv(f, index=False)
            data = load_crows(f)
        data.meta["source"] = where
        return data
    if {"chosen", "rejected"} <= set(raw.columns):
        return _finish_table(_trl_frame(raw, where), where, "hub", where)
    raise DataError(f"hub id {name!r}: no prompt/chosen/rejected columns; map them with columns=... "
                    f"(columns: {sorted(map(str, raw.columns))})")


# ---------------------------------------------------------------------------------------------- entry point
def load(source: str | Path | None = None, format: str | None = None, group: str | None = None,
         strata: Sequence[str] | None = None, skew: float = 0.0, seed: int = 0,
         columns: dict[str, str] | None = None, groups: Iterable[str] | None = None,
         twins: bool | Sequence[Sequence[str]] = True) -> PreferenceData:
    """Load preference data from any supported source.

    Parameters
    ----------
    source : a path (file or folder), a hub id, or None / ``"demo"`` for the embedded demo data (a BBQ
        subset; ``"demo-mini"``: 512 self-made items).
    format : one of :data:`FORMATS`; auto-detected from the path when None.
    group : column to use as the pair-level sensitive attribute (default: the loader's ``group``).
    strata : conditioning columns (default: BBQ ``question_polarity, context_condition``; else none).
    skew : fraction of eligible ambiguous BBQ items relabelled to the biased answer (see ``skew.py``).
    seed : seed of the skew choice.
    columns : column mapping ``{our name: file column}`` for generic tables (and hub data).
    groups : keep only pairs whose ``group`` is one of these (unknown value → :class:`DataError`).
    twins : counterfactual twins: True (BBQ: swap the answers' group words; other sources: the default
        term list), False (none), or a list of ``(a, b)`` term pairs for free text.
    """
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {list(FORMATS)}")
    if source is not None and str(source).strip() == "":
        raise DataError("empty source; give a path, a hub id or 'demo'")
    fmt = format or detect_format(source if source is not None else "demo")
    embedded = "demo" if source is None else str(source)
    if embedded in EMBEDDED_SOURCES and fmt in ("demo", "bbq"):
        fmt = "demo"
    if fmt != "hub" and fmt != "demo" and not Path(source).exists():  # type: ignore[arg-type]
        raise DataError(f"{source}: file not found")
    bbq_like = fmt in ("demo", "bbq")
    if fmt == "demo":
        data = load_demo(twins=bool(twins), name=embedded if embedded in EMBEDDED_SOURCES else "demo")
    elif fmt == "bbq":
        data = load_bbq(source, twins=bool(twins))  # type: ignore[arg-type]
    elif fmt == "crows":
        data = load_crows(source)  # type: ignore[arg-type]
    elif fmt == "hh":
        data = load_hh(source)  # type: ignore[arg-type]
    elif fmt == "trl":
        data = load_trl(source, columns)  # type: ignore[arg-type]
    elif fmt in ("csv", "jsonl", "parquet"):
        data = load_table(source, fmt, columns)  # type: ignore[arg-type]
    else:
        data = load_hub(str(source), columns)
        bbq_like = "chosen_idx" in data.df.columns
    if columns and fmt in ("demo", "bbq", "crows", "hh"):
        raise DataError(f"columns= (a column mapping) applies to csv/jsonl/parquet/trl/hub data, not {fmt}")
    if twins and not bbq_like:
        pairs = None if twins is True else twins
        data = PreferenceData(add_text_twins(data.df, pairs), name=data.name, strata=data.strata,
                              group_col=data.group_col, meta=data.meta)
    if skew:
        if not bbq_like:
            raise DataError(f"skew injection needs BBQ-style items (format bbq or demo), not {fmt}")
        data = apply_skew(data, float(skew), int(seed))
    else:
        data.meta.update(skew=0.0, skew_seed=int(seed))
    if group is not None and group != "group":
        data = data.with_group(group)
    if strata is not None:
        data = PreferenceData(data.df, name=data.name, strata=list(strata), group_col="group",
                              meta=data.meta)
    if groups is not None:
        data = data.filter_groups([str(g) for g in groups])
    data.meta.setdefault("format", fmt)
    return data
