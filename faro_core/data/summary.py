"""What a preference dataset holds: items, pairs, groups, strata, twins, skew, gold labels, warnings.

Shared by ``faro data summary`` and the dashboard's Data page.
"""

from __future__ import annotations

from typing import Any

from faro_core.data.schema import MIN_GROUP_PAIRS


def summarize(data: Any) -> dict[str, Any]:
    """The summary dict of a :class:`~faro_core.data.schema.PreferenceData`."""
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
    return out
