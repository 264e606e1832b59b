"""Best-of-n choices counted by what they name, per reward, with intervals and the paired difference
against BT; how often each reward's choice is a filtered reply.

Input: the choices of :func:`faro_core.policy.compare.choices_from_samples` (one row per prompt and
reward: the chosen reply's ``mention`` class, :data:`faro_core.policy.mentions.CLASSES`, and its
``filtered`` reason or None) and each prompt's BBQ template (its cluster). For each reward and class c the
share of prompts whose choice is in c is a mean of indicators, x_p = 1[choice_p in c]; its interval is
the cluster-robust t interval of :func:`faro_core.evaluate.paired.cluster_mean_interval` over templates
(prompts of one template are not independent). The paired difference against BT uses the same prompts:
d_p = x_p(reward) − x_p(BT), with the same interval.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from faro_core.errors import FaroError
from faro_core.evaluate.paired import cluster_mean_interval
from faro_core.policy.mentions import CLASSES


def _wide(choices: pd.DataFrame, column: str) -> pd.DataFrame:
    return choices.pivot_table(index="prompt_idx", columns="model", values=column, aggfunc="first")


def role_counts(choices: pd.DataFrame, clusters: dict[int, str] | pd.Series | None = None,
                baseline: str | None = None) -> dict[str, Any]:
    """Per reward: ``{"n_prompts", "counts": {class: int}, "shares": {class: interval}, "filtered":
    interval, "vs_baseline": {class: interval}}`` (intervals: :func:`cluster_mean_interval`'s dict).

    ``clusters``: prompt_idx -> cluster (template); None treats each prompt as its own cluster.
    ``baseline``: the reward the paired differences are taken against (e.g. the BT run); only prompts both
    rewards chose on count. The counts are exactly the tallies of the choices' ``mention`` column.
    """
    if choices.empty:
        raise FaroError("no choices to count")
    if "mention" not in choices:
        raise FaroError("choices need a 'mention' column (the reply classes)")
    ment = _wide(choices, "mention")
    filt = (_wide(choices.assign(_f=choices["filtered"].notna() if "filtered" in choices else False), "_f")
            .astype(float))
    prompts = ment.index.to_numpy()
    if clusters is None:
        cl = prompts.astype(str)
    else:
        cmap = dict(clusters)
        cl = np.array([str(cmap.get(int(p), p)) for p in prompts])
    out: dict[str, Any] = {"classes": list(CLASSES), "n_prompts": int(len(prompts)),
                           "clusters": int(len(set(cl))), "baseline": baseline, "models": {}}
    for model in ment.columns:
        m = ment[model]
        ok = m.notna().to_numpy()
        entry: dict[str, Any] = {"n_prompts": int(ok.sum()),
                                 "counts": {c: int((m == c).sum()) for c in CLASSES},
                                 "shares": {c: cluster_mean_interval((m[ok] == c).to_numpy(float), cl[ok])
                                            for c in CLASSES},
                                 "filtered": cluster_mean_interval(filt[model][ok].to_numpy(float), cl[ok])}
        if baseline is not None and baseline in ment.columns and model != baseline:
            both = ok & ment[baseline].notna().to_numpy()
            entry["vs_baseline"] = {
                c: cluster_mean_interval((m[both] == c).to_numpy(float) - (ment[baseline][both] == c).to_numpy(float),
                                         cl[both]) for c in CLASSES}
            entry["differing_prompts"] = int(sum(
                1 for p in prompts[both] if _chosen(choices, p, model) != _chosen(choices, p, baseline)))
        out["models"][model] = entry
    return out


def _chosen(choices: pd.DataFrame, prompt: Any, model: str) -> Any:
    row = choices[(choices["prompt_idx"] == prompt) & (choices["model"] == model)]
    return row["sample_idx"].iloc[0] if len(row) else None


def differing_prompts(choices: pd.DataFrame, a: str, b: str) -> int:
    """Prompts where rewards ``a`` and ``b`` choose different replies."""
    sa = choices[choices["model"] == a].set_index("prompt_idx")["sample_idx"]
    sb = choices[choices["model"] == b].set_index("prompt_idx")["sample_idx"]
    common = sa.index.intersection(sb.index)
    return int((sa.loc[common] != sb.loc[common]).sum())


def counts_table(rc: dict[str, Any], labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per reward and class: share with interval, count, and the paired difference against the
    baseline (for tables on the page, in the report and docs)."""
    lab = labels or {}
    rows = []
    for model, e in rc["models"].items():
        for c in rc["classes"]:
            s = e["shares"][c]
            row = {"reward": lab.get(model, model), "run": model, "class": c, "count": e["counts"][c],
                   "share": s["value"], "lo": s["lo"], "hi": s["hi"]}
            v = e.get("vs_baseline", {}).get(c)
            if v is not None:
                row.update(diff_vs_bt=v["value"], diff_lo=v["lo"], diff_hi=v["hi"])
            rows.append(row)
    return pd.DataFrame(rows)
