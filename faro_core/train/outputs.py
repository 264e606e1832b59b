"""What a finished run writes besides its model: ``scores.parquet``, ``data.json``, the split metrics.

Shared by the training loop and the methods that replace it (:mod:`faro_core.train.expgrad`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import pandas as pd
import torch

from faro_core.fairness.attributes import GROUP, attribute_strategy
from faro_core.fairness.constraint_set import ConstraintSet, all_constraints
from faro_core.fairness.metrics import split_metrics, split_violations
from faro_core.fairness.pairs import GroupIndex, PairTensors
from faro_core.fairness.role_stats import ITEM_INPUTS
from faro_core.io import write_bytes, write_parquet
from faro_core.store.runs import Run


def scores_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The attribute columns of ``scores.parquet`` (text left out; object columns as strings or None, since
    Parquet needs one type per column): the same for every run on ``df``."""
    scores = df.drop(columns=["prompt", "chosen", "rejected", "cf_prompt", "cf_chosen", "cf_rejected"])
    for col in scores.columns:
        if scores[col].dtype == object:
            scores[col] = scores[col].map(lambda v: None if v is None else str(v))
    return scores


SCORE_COLUMNS = ("r_chosen", "r_rejected", "cf_r_chosen", "cf_r_rejected")


def write_scores(run: Run, df: pd.DataFrame, tens: PairTensors, rewards: tuple[np.ndarray, ...],
                 base: pd.DataFrame | None = None, cache: dict[str, Any] | None = None) -> None:
    """``scores.parquet``: every pair of every split with its rewards (r_chosen, r_rejected, cf_r_*; [N] each)
    and attributes, text left out -- what evaluation reads instead of re-scoring. ``base``: ``scores_frame(df)``
    when the caller has it (the members of a batch build it once). ``cache``: a dict shared by runs on the same
    ``df`` (the members of a batch): the first call keeps its Arrow table there, later calls swap in their
    reward columns (same schema and metadata, so the same file as converting their own frame), and a file's
    encoded bytes are kept by its rewards, so members with equal rewards write them without encoding again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = None
    if cache is not None:  # members whose selected iterates score alike write the same file: its bytes, once
        key = ("scores_bytes", hashlib.sha1(b"".join(np.ascontiguousarray(r).tobytes() for r in rewards)).digest())
        if key in cache:
            write_bytes(run.file("scores.parquet"), cache[key])
            return
    table = cache.get("scores_table") if cache is not None else None
    if table is None:
        scores = (scores_frame(df) if base is None else base).assign(
            **dict(zip(SCORE_COLUMNS, rewards)), order=tens.order.numpy())
        if cache is None:
            write_parquet(run.file("scores.parquet"), scores)
            return
        table = cache["scores_table"] = pa.Table.from_pandas(scores, preserve_index=False)
    else:
        for name, values in zip(SCORE_COLUMNS, rewards):
            i = table.schema.get_field_index(name)
            column = pa.array(np.asarray(values), from_pandas=True)
            if column.type != table.schema.field(i).type:  # another dtype than the first run's: convert afresh
                cache.pop("scores_table", None)
                write_scores(run, df, tens, rewards, base)
                return
            table = table.set_column(i, table.schema.field(i), column)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")  # the bytes pq.write_table writes to a file
    data = cache[key] = sink.getvalue().to_pybytes()
    write_bytes(run.file("scores.parquet"), data)


def data_record(data: Any, split_idx: dict[str, torch.Tensor], backend: Any) -> dict[str, Any]:
    """``data.json``: the data set's name, meta, strata, pairs per split, groups and the feature pass's cost."""
    return {"name": data.name, "meta": data.meta, "strata": data.strata,
            "pairs": {s: int(len(v)) for s, v in split_idx.items()},
            "groups": data.groups(), "response_groups": data.response_groups(),
            "feature_seconds": backend.feature_seconds, "encoded": backend.encoded}


def gold_labels(df: pd.DataFrame, tens: PairTensors, idx: torch.Tensor) -> torch.Tensor:
    """[n] gold labels of the pairs ``idx`` (all NaN when the data has no gold column values)."""
    return tens.label[idx] if df["gold"].notna().any() else torch.full((len(idx),), float("nan"))


def split_metrics_of(df: pd.DataFrame, tens: PairTensors, idx: torch.Tensor, rewards: tuple[np.ndarray, ...],
                     constraints: ConstraintSet, measure: ConstraintSet, with_strict: bool = False
                     ) -> dict[str, Any] | tuple[dict[str, Any], torch.Tensor | None]:
    """:func:`~faro_core.fairness.metrics.split_metrics` of the pairs ``idx`` from final rewards ([N] arrays
    over all pairs); ``{}`` for an empty split. ``with_strict``: also return the trained constraints' strict
    violations on those pairs (None without constraints or pairs), as ``(metrics, g)``."""
    if len(idx) == 0:
        return ({}, None) if with_strict else {}
    rw = tuple(torch.from_numpy(np.asarray(a)[idx.numpy()]).float() for a in rewards)
    batch = tens.batch(idx, rw)
    g = constraints.strict(batch) if constraints else None
    out = split_metrics(batch, constraints, measure, gold_labels(df, tens, idx), strict=g)
    return (out, g) if with_strict else out


def role_frame(df: pd.DataFrame, idx: torch.Tensor) -> pd.DataFrame:
    """The columns of the pairs ``idx`` that :func:`~faro_core.fairness.role.role_items` reads, rewards aside."""
    cols = [c for c in ITEM_INPUTS if c in df and c not in ("r_chosen", "r_rejected")]  # not all 30: a take per column
    return df[cols].iloc[idx.numpy()]


def role_metrics(df: pd.DataFrame, tens: PairTensors, idx: torch.Tensor, rewards: tuple[np.ndarray, ...],
                 index: GroupIndex, min_count: int, frame: pd.DataFrame | None = None, plan: Any = None
                 ) -> dict[str, Any]:
    """For a per-item attribute (``--attribute role``): the raw rates of the pairs ``idx`` on the item table
    (``role``, :meth:`~faro_core.fairness.attributes.Attribute.report`) and their named-group violations for
    reference (``violation_group``); ``{}`` for an attribute measured per pair. ``frame``: :func:`role_frame`
    of ``idx``, where the caller keeps it, and ``plan`` its attribute's
    :meth:`~faro_core.fairness.attributes.Attribute.report_plan`."""
    attribute = attribute_strategy(index.attribute)
    if not attribute.per_item:
        return {}
    rw = tuple(torch.from_numpy(np.asarray(a)[idx.numpy()]).float() for a in rewards)
    frame = role_frame(df, idx) if frame is None else frame
    rows = frame.assign(r_chosen=rw[0].numpy(), r_rejected=rw[1].numpy())
    group_index = dataclasses.replace(index, attribute=GROUP.name)
    measure = all_constraints(group_index, min_count)
    # only with a plan: an attribute of a user's may define report() without it
    report = attribute.report(rows, n_boot=0, plan=plan) if plan is not None else attribute.report(rows, n_boot=0)
    return {"role": report, "violation_group": split_violations(tens.batch(idx, rw), measure)}
