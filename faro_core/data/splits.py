"""Train / validation / test splits by a *cluster*: the unit no two splits share, stratified, seeded.

The split unit (``FaroConfig.split_by``) says what a held-out claim covers:

- ``item``: an item's pairs stay together (an item is one question with its answers). On BBQ this leaves
  near-copies across splits: BBQ instantiates each template into many items (names swapped, both
  polarities, both context conditions), so a test item usually has a sibling from its template in train.
- ``template``: BBQ's template, category x ``question_index`` (what BBQ's generator instantiates); stratified
  by category, so every category has test templates. A claim then covers *templates the model never saw*.
- ``column:NAME``: the values of a column of the data (a prompt or conversation id, say) are the clusters.

:func:`cluster_ids` gives each pair's cluster; :func:`split_by` assigns whole clusters to splits. The same
clusters are what the evaluation resamples and the certificate counts (:mod:`faro_core.evaluate`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from faro_core.data.schema import PreferenceData
from faro_core.errors import DataError

SPLIT_UNITS = ("item", "template")  # and column:NAME
# The fractions a config that names none gets, by split unit. Template splits hold out 20% of each BBQ
# category's 25 templates (5 per category: 25 test templates over BBQ's 5 published categories).
DEFAULT_FRACTIONS = {"item": (0.15, 0.15), "template": (0.2, 0.2), "column": (0.2, 0.2)}


def check_split_unit(unit: str) -> str:
    """``unit`` if it is ``item``, ``template`` or ``column:NAME`` (NAME non-empty), else :class:`DataError`."""
    if unit in SPLIT_UNITS or (unit.startswith("column:") and unit[len("column:"):].strip()):
        return unit
    raise DataError(f"unknown split unit {unit!r}; choose item, template or column:NAME")


def unit_kind(unit: str) -> str:
    """``item``, ``template`` or ``column`` (the kind of a split unit, keying :data:`DEFAULT_FRACTIONS`)."""
    return "column" if check_split_unit(unit).startswith("column:") else unit


def cluster_ids(df: pd.DataFrame, unit: str, name: str = "data") -> pd.Series:
    """Each pair's cluster under split unit ``unit`` (strings, indexed like ``df``).

    ``item``: ``item_id``; ``template``: ``category/question_index`` (needs both columns, as BBQ-format data
    has them); ``column:NAME``: the column's values (missing values are an error: a pair without a cluster
    cannot be held out)."""
    kind = unit_kind(unit)
    if kind == "item":
        return df["item_id"].astype(str)
    if kind == "template":
        missing = [c for c in ("category", "question_index") if c not in df.columns]
        if missing:
            raise DataError(f"{name}: split by template needs the column(s) {missing} (BBQ-format data); "
                            f"use --split-by item or column:NAME")
        qi = df["question_index"].astype(str)
        if (qi.str.strip() == "").any() or df["question_index"].isna().any():
            raise DataError(f"{name}: {int(((qi.str.strip() == '') | df['question_index'].isna()).sum())} "
                            f"pair(s) have no question_index, so no template; use --split-by item")
        return df["category"].astype(str) + "/" + qi
    col = unit[len("column:"):].strip()
    if col not in df.columns:
        raise DataError(f"{name}: split column {col!r} is not a column of the data "
                        f"(columns: {', '.join(map(str, df.columns[:20]))})")
    if df[col].isna().any():
        raise DataError(f"{name}: split column {col!r} has {int(df[col].isna().sum())} missing value(s)")
    return df[col].astype(str)


def _assign(strata: pd.Series, val_frac: float, test_frac: float, seed: int) -> dict[str, str]:
    """``{unit: split}``: within each stratum (``strata``: stratum per unit, indexed by unit) units are shuffled
    with ``numpy.random.default_rng(seed)`` and cut at the rounded fractions."""
    rng = np.random.default_rng(seed)
    assign: dict[str, str] = {}
    for key in sorted(strata.unique()):
        ids = np.array(sorted(strata.index[strata == key]))
        ids = ids[rng.permutation(len(ids))]
        n = len(ids)
        n_test = int(round(test_frac * n))
        n_val = int(round(val_frac * n))
        if n >= 3:  # keep each non-empty fraction non-empty when the stratum is large enough
            n_test = max(n_test, 1 if test_frac > 0 else 0)
            n_val = max(n_val, 1 if val_frac > 0 else 0)
            while n_test + n_val > n - 1:
                if n_val >= n_test and n_val > 0:
                    n_val -= 1
                else:
                    n_test -= 1
        for i, unit in enumerate(ids):
            assign[unit] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assign


def _parts(data: PreferenceData, split_col: pd.Series, val_frac: float, test_frac: float,
           n_units: int, what: str) -> dict[str, PreferenceData]:
    df = data.df
    out: dict[str, PreferenceData] = {}
    for name in ("train", "val", "test"):
        mask = (split_col == name).to_numpy()
        if not mask.any():
            frac = {"train": 1 - val_frac - test_frac, "val": val_frac, "test": test_frac}[name]
            if frac > 0:
                raise DataError(f"{data.name}: too few {what} ({n_units}) for a non-empty {name} split")
            empty = object.__new__(PreferenceData)  # normalize() rejects an empty frame by design
            empty.df, empty.name, empty.strata = df.iloc[0:0].reset_index(drop=True), data.name, data.strata
            empty.group_col, empty.meta = data.group_col, {**data.meta, "split": name}
            out[name] = empty
            continue
        out[name] = replace(data, df=df[mask].reset_index(drop=True), meta={**data.meta, "split": name})
    return out


def _check_fractions(val_frac: float, test_frac: float) -> None:
    if val_frac < 0 or test_frac < 0 or val_frac + test_frac >= 1:
        raise DataError(f"split fractions must be >= 0 with val+test < 1; got val={val_frac}, test={test_frac}")


def split_by_item(data: PreferenceData, val_frac: float = 0.15, test_frac: float = 0.15,
                  seed: int = 0) -> dict[str, PreferenceData]:
    """Split ``data`` into ``{"train", "val", "test"}`` by ``item_id``.

    Items are stratified by their pair-level ``group`` (an item's first pair's group; ``None`` is its own
    stratum): within each stratum items are shuffled with ``numpy.random.default_rng(seed)`` and cut at
    the rounded fractions, so each group keeps its share in every split. A split may be empty only when
    its fraction is 0.
    """
    _check_fractions(val_frac, test_frac)
    df = data.df
    items = df.groupby("item_id", sort=True)["group"].first()
    strata = items.map(lambda g: "\x00none" if g is None else str(g))
    assign = _assign(strata, val_frac, test_frac, seed)
    return _parts(data, df["item_id"].map(assign), val_frac, test_frac, len(items), "items")


def split_by(data: PreferenceData, unit: str = "item", val_frac: float | None = None,
             test_frac: float | None = None, seed: int = 0) -> dict[str, PreferenceData]:
    """Split ``data`` into ``{"train", "val", "test"}`` so that no cluster (:func:`cluster_ids` of ``unit``)
    is in two splits. Each part's frame gets a ``cluster`` column.

    ``item`` is :func:`split_by_item` exactly (stratified by group). ``template`` stratifies the templates by
    category; ``column:NAME`` by nothing (one stratum). Fractions default to :data:`DEFAULT_FRACTIONS` of the
    unit and count clusters, not pairs.
    """
    kind = unit_kind(unit)
    dv, dt = DEFAULT_FRACTIONS[kind]
    val_frac = dv if val_frac is None else val_frac
    test_frac = dt if test_frac is None else test_frac
    _check_fractions(val_frac, test_frac)
    clusters = cluster_ids(data.df, unit, data.name)
    if kind == "item":
        parts = split_by_item(data, val_frac, test_frac, seed)
    else:
        df = data.df
        if kind == "template":
            strata = df.assign(_c=clusters).groupby("_c", sort=True)["category"].first().astype(str)
        else:
            strata = pd.Series("all", index=sorted(clusters.unique()))
        assign = _assign(strata, val_frac, test_frac, seed)
        what = "templates" if kind == "template" else f"values of {unit[len('column:'):]!r}"
        parts = _parts(data, clusters.map(assign), val_frac, test_frac, len(strata), what)
    for p in parts.values():
        p.df = p.df.assign(cluster=cluster_ids(p.df, unit, data.name).to_numpy()) if len(p.df) else \
            p.df.assign(cluster=pd.Series(dtype=str))
    return parts


def split_summary(df: pd.DataFrame, unit: str, warn_below: int = 20) -> dict[str, object]:
    """Clusters per split of a frame with ``split`` and ``cluster`` columns: ``{"unit", "clusters": {split: n},
    "shared": clusters in two splits (0 by construction), "warnings": [...]}``; a split with fewer than
    ``warn_below`` clusters gets a warning (a held-out claim on it has few independent draws)."""
    counts = {s: int(df.loc[df["split"] == s, "cluster"].nunique()) for s in ("train", "val", "test")}
    per = df.groupby("cluster")["split"].nunique()
    warnings = [f"the {s} split has {n} {unit} cluster(s), fewer than {warn_below}: its intervals and "
                f"certificates rest on few independent draws" for s, n in counts.items() if 0 < n < warn_below]
    return {"unit": unit, "clusters": counts, "shared": int((per > 1).sum()), "warnings": warnings}
