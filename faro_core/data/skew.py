"""Skew injection: demographic skew in the observed preference labels, as biased annotators would make it.

A fraction ``rho`` of the *eligible* items (ambiguous BBQ items whose correct answer is "unknown" and whose
biased answer is known) is chosen with ``numpy.random.default_rng(seed)`` (exactly ``round(rho * n)``
items). Each chosen item's observed chosen answer becomes the biased one; its two pairs become

- (biased ≻ unknown), ``gold = 0.0``: the rejected "unknown" is the truly correct answer;
- (biased ≻ other group's answer), ``gold = NaN``: neither response is correct;

and are marked ``skewed = True``. Counterfactual twin text follows the same relabelling. ``rho = 0`` returns
the data unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from faro_core.data.bbq import response_role
from faro_core.data.schema import PreferenceData
from faro_core.errors import DataError

_NEEDED = ("chosen_idx", "rejected_idx", "biased_idx", "unknown_idx", "label", "context_condition")


def eligible_items(df: pd.DataFrame) -> list[str]:
    """Sorted item ids that skew may relabel (ambiguous, correct = unknown, biased answer known)."""
    m = ((df["context_condition"] == "ambig") & df["biased_idx"].notna()
         & (df["label"].astype(int) == df["unknown_idx"].astype(int)))
    return sorted(df.loc[m, "item_id"].astype(str).unique())


def choose_skewed(df: pd.DataFrame, rho: float, seed: int = 0) -> list[str]:
    """The item ids skew relabels: ``round(rho * n_eligible)`` of them, chosen by ``seed``."""
    if not 0.0 <= float(rho) <= 1.0:
        raise DataError(f"skew must be in [0, 1], got {rho}")
    elig = eligible_items(df)
    n = int(round(float(rho) * len(elig)))
    if n == 0:
        return []
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(elig), size=n, replace=False)
    return sorted(elig[i] for i in idx)


def apply_skew(data: PreferenceData, rho: float, seed: int = 0) -> PreferenceData:
    """Relabel a fraction ``rho`` of eligible ambiguous items to their biased answer (see module doc)."""
    missing = [c for c in _NEEDED if c not in data.df.columns]
    if missing:
        if float(rho) == 0.0:
            return data
        raise DataError(f"{data.name}: skew injection needs BBQ-style items (answer indices, context "
                        f"condition); missing column(s) {missing}")
    chosen_items = set(choose_skewed(data.df, rho, seed))
    meta = {**data.meta, "skew": float(rho), "skew_seed": int(seed), "skewed_items": len(chosen_items),
            "skew_eligible_items": len(eligible_items(data.df))}
    if not chosen_items:
        return replace(data, meta=meta)
    df = data.df.copy()
    sel = df["item_id"].isin(chosen_items).to_numpy()
    sub = df.loc[sel]
    # (item, answer index) -> text / group / twin text, from the chosen and rejected sides of the rows
    long = pd.concat([
        pd.DataFrame({"item_id": sub["item_id"].to_numpy(), "idx": sub[f"{side}_idx"].astype(int).to_numpy(),
                      "text": sub[side].to_numpy(), "grp": sub[f"{side}_group"].to_numpy(),
                      "cf": sub[f"cf_{side}"].to_numpy()})
        for side in ("chosen", "rejected")]).drop_duplicates(["item_id", "idx"]).set_index(["item_id", "idx"])
    b = sub["biased_idx"].astype(int).to_numpy()
    u = sub["unknown_idx"].astype(int).to_numpy()
    rej = sub["rejected_idx"].astype(int).to_numpy()
    new_rej = np.where(rej == b, u, rej)
    items = sub["item_id"].to_numpy()
    kb = pd.MultiIndex.from_arrays([items, b])
    kr = pd.MultiIndex.from_arrays([items, new_rej])
    pid = [f"{i}/{x}-{y}" for i, x, y in zip(items, b, new_rej)]
    has_cf = sub["cf_chosen"].notna().to_numpy()
    upd = {
        "chosen": long["text"].reindex(kb).to_numpy(), "rejected": long["text"].reindex(kr).to_numpy(),
        "chosen_group": long["grp"].reindex(kb).to_numpy(), "rejected_group": long["grp"].reindex(kr).to_numpy(),
        "chosen_idx": b, "rejected_idx": new_rej, "gold": np.where(new_rej == u, 0.0, np.nan),
        "skewed": True, "pair_id": pid,
        "cf_chosen": np.where(has_cf, long["cf"].reindex(kb).to_numpy(), None),
        "cf_rejected": np.where(has_cf, long["cf"].reindex(kr).to_numpy(), None),
        "twin_id": np.where(has_cf, [f"{p}~cf" for p in pid], None),
    }
    if "chosen_role" in df.columns:  # the response roles follow the relabelled answers
        upd["chosen_role"] = np.array([response_role(i, x, y) for i, x, y in zip(b, b, u)], dtype=object)
        upd["rejected_role"] = np.array([response_role(i, x, y) for i, x, y in zip(new_rej, b, u)], dtype=object)
    for k, v in upd.items():
        if isinstance(v, np.ndarray) and v.dtype == object:
            df[k] = df[k].astype(object)
        df.loc[sel, k] = v
    return PreferenceData(df, name=data.name, strata=data.strata, group_col=data.group_col, meta=meta)
