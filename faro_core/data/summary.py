"""What a preference dataset holds: items, pairs, groups, strata, twins, skew, gold labels, warnings.

Shared by ``faro data summary`` and the dashboard's Data page.
"""

from __future__ import annotations

from typing import Any

from faro_core.data.schema import MIN_GROUP_PAIRS


def summarize(data: Any, split_by: str | None = None, val_frac: float | None = None,
              test_frac: float | None = None, seed: int = 0) -> dict[str, Any]:
    """The summary dict of a :class:`~faro_core.data.schema.PreferenceData`.

    With ``split_by`` (a split unit, :mod:`faro_core.data.splits`), ``splits`` holds the number of clusters
    and pairs per split of that unit (seed ``seed``), and a split with fewer than 20 clusters adds a warning."""
    df = data.df
    groups = data.groups()
    warnings = [f"group {g!r} has only {n} pairs (< {MIN_GROUP_PAIRS}); its statistics will be noisy"
                for g, n in groups.items() if n < MIN_GROUP_PAIRS]
    if not groups:
        warnings.append("no pair-level groups: EO/DP constraints have nothing to compare")
    n_no_group = int(df["group"].isna().sum())
    if groups and n_no_group:
        warnings.append(f"{n_no_group} pairs have no group")
    strata_counts: dict[str, int] = {}
    if data.strata:
        for key, n in df.groupby(list(data.strata), dropna=False).size().items():
            k = key if isinstance(key, tuple) else (key,)
            strata_counts["|".join(map(str, k))] = int(n)
    categories = {str(k): int(v) for k, v in df.groupby("category")["item_id"].nunique().sort_index().items()}
    gold = df["gold"]
    meta = data.meta
    out: dict[str, Any] = {
        "name": data.name,
        "source": str(meta.get("source", "")),
        "format": meta.get("format"),
        "items": int(df["item_id"].nunique()),
        "pairs": int(len(df)),
        "groups": groups,
        "response_groups": data.response_groups(),
        "categories": categories,
        "group_categories": {str(g): str(c) for g, c in df.dropna(subset=["group"]).groupby("group")["category"]
                             .agg(lambda x: x.mode().iloc[0] if len(x.mode()) else "").items()},
        "strata": list(data.strata),
        "strata_counts": strata_counts,
        "twins": int(df["twin_id"].notna().sum()),
        "skewed": int(df["skewed"].sum()),
        "skewed_items": int(df.loc[df["skewed"], "item_id"].nunique()),
        "skew": float(meta.get("skew", 0.0)),
        "seed": int(meta.get("skew_seed", 0)),
        "gold": {"chosen_better": int((gold == 1.0).sum()), "rejected_better": int((gold == 0.0).sum()),
                 "none": int(gold.isna().sum())},
        "warnings": warnings,
    }
    if "skew_eligible_items" in meta:
        out["skew_eligible_items"] = int(meta["skew_eligible_items"])
    if "target_coverage" in meta:
        out["target_coverage"] = meta["target_coverage"]
    if meta.get("empty_responses"):
        out["empty_responses"] = int(meta["empty_responses"])
    if split_by is not None:
        import pandas as pd

        from faro_core.data.splits import split_by as split_data
        from faro_core.data.splits import split_summary

        parts = split_data(data, split_by, val_frac, test_frac, seed=seed)
        frame = pd.concat([p.df.assign(split=n) for n, p in parts.items() if len(p.df)], ignore_index=True)
        info = split_summary(frame, split_by)
        info["pairs"] = {n: int(len(p.df)) for n, p in parts.items()}
        info["seed"] = int(seed)
        out["splits"] = info
        warnings.extend(info.pop("warnings"))
    return out
