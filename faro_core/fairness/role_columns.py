"""The stereotype role's columns on a pair frame: the leaf of the ``--attribute role`` strategy.

A pair frame carries the role of each response in ``chosen_role`` / ``rejected_role`` (``"biased"``,
``"counter"`` or None: the response names neither person, the "unknown" answer); :func:`add_role_columns`
derives them from a table's own columns or from the BBQ answer indices, and :func:`role_codes` turns them into
the integer codes :class:`~faro_core.fairness.pairs.PairTensors` carries; :func:`role_strata` gives the strata
a role run conditions on by default. Statistics on roles live in :mod:`faro_core.fairness.role_stats`,
constraints in :mod:`faro_core.fairness.role_constraint`; this module needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from faro_core.errors import DataError

ROLES = ("biased", "counter")
ROLE_CODES = {"biased": 0, "counter": 1}  # code 2: the response names no group ("unknown")
NONE_CODE = 2
ROLE_COLUMNS = ("chosen_role", "rejected_role")
BBQ_INDEX_COLUMNS = ("chosen_idx", "rejected_idx", "biased_idx", "unknown_idx")


# ---------------------------------------------------------------------------------------------------
# roles on a pair frame
# ---------------------------------------------------------------------------------------------------
def has_roles(df: pd.DataFrame) -> bool:
    """True when the frame carries response roles or the BBQ answer indices to derive them."""
    return set(ROLE_COLUMNS) <= set(df.columns) or set(BBQ_INDEX_COLUMNS) <= set(df.columns)


def add_role_columns(df: pd.DataFrame, columns: Sequence[str] | None = None, name: str = "data") -> pd.DataFrame:
    """``df`` with ``chosen_role`` / ``rejected_role`` (``"biased"``, ``"counter"`` or None).

    ``columns`` = (chosen column, rejected column) names a table's own response-attribute columns (values
    ``biased`` / ``counter``; empty or anything else for a response with no role); without it, existing
    ``chosen_role`` / ``rejected_role`` columns are kept, else the roles are derived from the BBQ answer
    indices. Anything else is a :class:`DataError` naming what is missing.
    """
    from faro_core.data.bbq import response_role

    df = df.copy()
    if columns:
        if len(columns) != 2:
            raise DataError(f"{name}: --role-columns takes two columns (the chosen and the rejected "
                            f"response's role), got {list(columns)}")
        absent = [c for c in columns if c not in df.columns]
        if absent:
            raise DataError(f"{name}: role column(s) {absent} are absent; columns: {sorted(map(str, df.columns))}")
        for ours, theirs in zip(ROLE_COLUMNS, columns):
            df[ours] = df[theirs]
    elif not set(ROLE_COLUMNS) <= set(df.columns):
        if not set(BBQ_INDEX_COLUMNS) <= set(df.columns):
            raise DataError(f"{name}: --attribute role needs the responses' stereotype roles: columns "
                            f"chosen_role / rejected_role (name yours with --role-columns CHOSEN,REJECTED) or "
                            f"BBQ-format items; columns: {sorted(map(str, df.columns))}")
        for side in ("chosen", "rejected"):
            df[f"{side}_role"] = [response_role(i, b, u) for i, b, u in
                                  zip(df[f"{side}_idx"], df["biased_idx"], df["unknown_idx"])]
    for c in ROLE_COLUMNS:
        df[c] = pd.Series([str(v).strip().lower() if isinstance(v, str) and str(v).strip().lower() in ROLES
                           else None for v in df[c]], index=df.index, dtype=object)
    if not (df["chosen_role"].notna() | df["rejected_role"].notna()).any():
        raise DataError(f"{name}: no response has a stereotype role ('biased' or 'counter'): no item names a "
                        f"stereotyped group in exactly one answer; train with --attribute group")
    return df


def role_codes(df: pd.DataFrame) -> tuple[Tensor, Tensor, Tensor]:
    """(item [N], chosen role [N], rejected role [N]) codes of a pair frame with role columns.

    item: a code per item that has both a biased and a counter response (-1: the pair's item has not);
    roles: 0 biased, 1 counter, 2 names neither ("unknown"); -1 on pairs whose item code is -1.
    """
    cr = df["chosen_role"].map(lambda v: ROLE_CODES.get(v, NONE_CODE)).to_numpy(dtype=np.int64)
    rr = df["rejected_role"].map(lambda v: ROLE_CODES.get(v, NONE_CODE)).to_numpy(dtype=np.int64)
    items = df["item_id"].astype(str).to_numpy()
    has = pd.DataFrame({"i": np.concatenate([items, items]), "r": np.concatenate([cr, rr])})
    full = has.groupby("i")["r"].agg(lambda s: {0, 1} <= set(s))
    ok = pd.Series(items).map(full).fillna(False).to_numpy(dtype=bool)
    codes, _ = pd.factorize(pd.Series(items[ok]))
    item = np.full(len(df), -1, dtype=np.int64)
    item[ok] = codes
    cr, rr = np.where(ok, cr, -1), np.where(ok, rr, -1)
    return torch.from_numpy(item), torch.from_numpy(cr), torch.from_numpy(rr)


def role_strata(strata: Sequence[str]) -> list[str]:
    """The strata a role run conditions on when the config names none: BBQ's ``context_condition`` alone (DP
    on the ambiguous items, EO on the disambiguated ones, each pooled over polarity and category: the biased
    answer already follows the question's polarity), or none on data without it. ``--strata`` adds category
    or polarity; cells under ``min_count`` items are then not constrained."""
    return ["context_condition"] if "context_condition" in strata else []
