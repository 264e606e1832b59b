"""Reading preference tables from disk: CSV/TSV, JSON/JSONL (gzipped too) and Parquet, with clear errors.

``read_table(path) -> DataFrame``; ``first_record(path)`` peeks at a file's first row (format detection);
``is_messages(v)`` says whether a cell holds a conversation (a list of ``{"role", "content"}`` messages).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from faro_core.data import bbq as bbq_mod
from faro_core.errors import DataError

TABLE_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".jsonl.gz", ".json", ".parquet", ".pq")


def read_table(path: Path) -> pd.DataFrame:
    """Read CSV / TSV / JSONL(.gz) / JSON / Parquet into a frame; errors name the file (and line)."""
    name = path.name.lower()
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a file (or --format bbq / hh for a folder)")
    try:
        if name.endswith((".csv", ".tsv")):
            try:
                # index_col=False: a row with more fields than the header is an error, not silently an index
                with warnings.catch_warnings():
                    warnings.simplefilter("error", pd.errors.ParserWarning)
                    return pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",", encoding="utf-8",
                                       encoding_errors="strict", index_col=False)
            except pd.errors.ParserWarning:
                raise DataError(f"{path}: malformed CSV (a row has more fields than the header)") from None
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            except pd.errors.EmptyDataError:
                raise DataError(f"{path}: the dataset is empty (no rows)") from None
            except pd.errors.ParserError as exc:
                raise DataError(f"{path}: malformed CSV ({str(exc).strip()})") from None
        if name.endswith((".jsonl", ".jsonl.gz")):
            recs = [rec for _, rec in bbq_mod.iter_jsonl(path)]
            if not recs:
                raise DataError(f"{path}: the dataset is empty (no rows)")
            return pd.DataFrame(recs)
        if name.endswith(".json"):
            try:
                obj = json.loads(path.read_bytes().decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
            if isinstance(obj, dict) and "data" in obj:
                obj = obj["data"]
            if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
                raise DataError(f"{path}: a .json file must hold a list of objects (rows)")
            if not obj:
                raise DataError(f"{path}: the dataset is empty (no rows)")
            return pd.DataFrame(obj)
        if name.endswith((".parquet", ".pq")):
            try:
                return pd.read_parquet(path)
            except Exception as exc:  # pyarrow raises several types for a bad file
                raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    raise DataError(f"{path}: unsupported file type; expected one of {list(TABLE_EXTENSIONS)} or a BBQ folder")


def first_record(path: Path) -> dict[str, Any] | None:
    for _, rec in bbq_mod.iter_jsonl(path):
        return rec
    return None


def is_messages(v: Any) -> bool:
    if isinstance(v, np.ndarray):
        v = v.tolist()
    return isinstance(v, list) and all(isinstance(m, dict) and "content" in m for m in v)


def check_unique(df: pd.DataFrame, col: str, where: Any, what: str) -> None:
    dup = df[col].astype(str).duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(f"{where}: duplicate {what} {str(df[col].iloc[row])!r} at row {row} (column {col!r}); "
                        f"ids must be unique")
