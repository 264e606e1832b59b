"""The preference-data type: one row per pair, with the group attributes fairness needs.

Columns (fixed names; all text is ``str``):

==================  ==========================================================================================
``item_id``         the source item; all pairs of one item stay in one split
``pair_id``         unique per row
``prompt``          context + question (or the dialogue so far)
``chosen``          the response preferred in the (possibly skewed) observed data
``rejected``        the other response
``chosen_group``    group the chosen response names, or None (e.g. BBQ "unknown"); what DP looks at
``rejected_group``  same for the rejected response
``group``           pair-level sensitive attribute (what EO looks at); None where the pair has none
``gold``            float: 1.0 chosen is truly better, 0.0 rejected is, NaN no gold / a tie
``skewed``          bool: the observed label was changed by skew injection
``twin_id``         id of the counterfactual twin (or None)
``cf_prompt``, ``cf_chosen``, ``cf_rejected``  the twin's text (group terms swapped), or None
``source``          where the row came from (loader name + path)
``category``        source category (BBQ category, CrowS bias type, ...)
strata columns      any extra columns named in :attr:`PreferenceData.strata` (e.g. ``question_polarity``)
==================  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import DataError

REQUIRED = ("item_id", "pair_id", "prompt", "chosen", "rejected")
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "chosen_group": None,
    "rejected_group": None,
    "group": None,
    "gold": np.nan,
    "skewed": False,
    "twin_id": None,
    "cf_prompt": None,
    "cf_chosen": None,
    "cf_rejected": None,
    "source": "",
    "category": "",
}
TEXT_COLUMNS = ("prompt", "chosen", "rejected")
MAX_TEXT_CHARS = 1_000_000  # one prompt or response; longer is corrupt input (the encoders read ~256 tokens)
MIN_GROUP_PAIRS = 30


@dataclass
class PreferenceData:
    """Preference pairs with group attributes (a pandas frame plus which columns mean what).

    Parameters
    ----------
    df : one row per pair, columns as in the module docstring.
    name : short human name (``"demo"``, ``"bbq"``, ...).
    strata : conditioning columns for DP/EO (e.g. ``["question_polarity", "context_condition"]``).
    group_col : the column holding the pair-level sensitive attribute; copied into ``group``.
    meta : free-form provenance (source path, format, skew, seed).
    """

    df: pd.DataFrame
    name: str = "data"
    strata: list[str] = field(default_factory=list)
    group_col: str = "group"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.df = normalize(self.df, strata=self.strata, group_col=self.group_col, name=self.name)

    # -- basic views -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.df)

    @property
    def has_gold(self) -> bool:
        return bool(self.df["gold"].notna().any())

    @property
    def has_twins(self) -> bool:
        return bool(self.df["cf_chosen"].notna().any())

    def groups(self) -> dict[str, int]:
        """Pair count per pair-level group (pairs with no group left out)."""
        return {str(k): int(v) for k, v in self.df["group"].dropna().value_counts().sort_index().items()}

    def response_groups(self) -> dict[str, int]:
        """Response count per response-level group (what DP compares)."""
        s = pd.concat([self.df["chosen_group"], self.df["rejected_group"]]).dropna()
        return {str(k): int(v) for k, v in s.value_counts().sort_index().items()}

    def subset(self, mask: Iterable[bool] | np.ndarray | pd.Series) -> PreferenceData:
        return replace(self, df=self.df[np.asarray(mask, dtype=bool)].reset_index(drop=True))

    def filter_groups(self, groups: Iterable[str]) -> PreferenceData:
        """Keep pairs whose ``group`` is in ``groups``; an unknown group value is a :class:`DataError`."""
        groups = list(groups)
        known = set(self.df["group"].dropna().astype(str))
        unknown = [g for g in groups if g not in known]
        if unknown:
            raise DataError(f"unknown group value(s) {unknown} in column 'group'; known: {sorted(known)}")
        return self.subset(self.df["group"].isin(groups))

    def with_group(self, column: str) -> PreferenceData:
        """Use ``column`` as the pair-level sensitive attribute."""
        if column not in self.df.columns:
            raise DataError(f"group column {column!r} is not in the data; columns: {sorted(self.df.columns)}")
        return PreferenceData(self.df.copy(), name=self.name, strata=self.strata, group_col=column, meta=self.meta)


def normalize(df: pd.DataFrame, strata: list[str] | None = None, group_col: str = "group",
              name: str = "data") -> pd.DataFrame:
    """Check and complete a pair frame: required columns, text sanity, defaults for optional columns.

    Raises :class:`DataError` naming the column/row at fault.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise DataError(f"{name}: the dataset is empty (no preference pairs)")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; present: {sorted(map(str, df.columns))}")
    df = df.copy()
    for col, default in OPTIONAL_DEFAULTS.items():
        if col not in df.columns:
            df[col] = default
    if group_col != "group":
        if group_col not in df.columns:
            raise DataError(f"{name}: group column {group_col!r} is absent; columns: {sorted(df.columns)}")
        df["group"] = df[group_col]
    for col in strata or []:
        if col not in df.columns:
            raise DataError(f"{name}: strata column {col!r} is absent; columns: {sorted(df.columns)}")
    for col in TEXT_COLUMNS:
        bad = df[col].isna() | ~df[col].map(lambda v: isinstance(v, str) and v.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{name}: column {col!r} has NaN or empty text at row {row} "
                            f"(pair_id={df['pair_id'].iloc[row]!r}); {int(bad.sum())} such rows")
        too_long = df[col].str.len() > MAX_TEXT_CHARS
        if too_long.any():
            row = int(np.flatnonzero(too_long.to_numpy())[0])
            raise DataError(f"{name}: column {col!r} has a text of {len(df[col].iloc[row]):,} characters at row "
                            f"{row} (pair_id={df['pair_id'].iloc[row]!r}); the limit is {MAX_TEXT_CHARS:,}")
    for col in ("item_id", "pair_id"):
        df[col] = df[col].astype(str)
    if df["pair_id"].duplicated().any():
        dup = df.loc[df["pair_id"].duplicated(), "pair_id"].iloc[0]
        raise DataError(f"{name}: duplicate pair_id {dup!r}; pair ids must be unique")
    for col in ("chosen_group", "rejected_group", "group"):
        # build an object Series explicitly: pandas >= 3 would otherwise infer a string dtype and turn None
        # into NaN; "no group" is None here (test it with pd.isna, which covers both)
        df[col] = pd.Series([None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA
                             or v == "" else str(v) for v in df[col]], index=df.index, dtype=object)
    try:
        df["gold"] = pd.to_numeric(df["gold"], errors="raise").astype(float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}: column 'gold' must be 1, 0 or empty: {exc}") from exc
    if not df["gold"].dropna().isin([0.0, 1.0]).all():
        raise DataError(f"{name}: column 'gold' must hold only 1, 0 or NaN")
    df["skewed"] = df["skewed"].fillna(False).astype(bool)
    return df.reset_index(drop=True)
