"""Train / validation / test splits by item (no item's pairs in two splits), stratified by group, seeded."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from faro_core.data.schema import PreferenceData
from faro_core.errors import DataError


def split_by_item(data: PreferenceData, val_frac: float = 0.15, test_frac: float = 0.15,
                  seed: int = 0) -> dict[str, PreferenceData]:
    """Split ``data`` into ``{"train", "val", "test"}`` by ``item_id``.

    Items are stratified by their pair-level ``group`` (an item's first pair's group; ``None`` is its own
    stratum): within each stratum items are shuffled with ``numpy.random.default_rng(seed)`` and cut at
    the rounded fractions, so each group keeps its share in every split. A split may be empty only when
    its fraction is 0.
    """
    if val_frac < 0 or test_frac < 0 or val_frac + test_frac >= 1:
        raise DataError(f"split fractions must be >= 0 with val+test < 1; got val={val_frac}, test={test_frac}")
    df = data.df
    items = df.groupby("item_id", sort=True)["group"].first()
    strata = items.map(lambda g: "\x00none" if g is None else str(g))
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
        for i, item in enumerate(ids):
            assign[item] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    split_col = df["item_id"].map(assign)
    out: dict[str, PreferenceData] = {}
    for name in ("train", "val", "test"):
        mask = (split_col == name).to_numpy()
        if not mask.any():
            frac = {"train": 1 - val_frac - test_frac, "val": val_frac, "test": test_frac}[name]
            if frac > 0:
                raise DataError(f"{data.name}: too few items ({len(items)}) for a non-empty {name} split")
            empty = object.__new__(PreferenceData)  # normalize() rejects an empty frame by design
            empty.df, empty.name, empty.strata = df.iloc[0:0].reset_index(drop=True), data.name, data.strata
            empty.group_col, empty.meta = data.group_col, {**data.meta, "split": name}
            out[name] = empty
            continue
        out[name] = replace(data, df=df[mask].reset_index(drop=True), meta={**data.meta, "split": name})
    return out
