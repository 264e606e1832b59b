"""Role items of the exact shape of :func:`faro_core.fairness.role.role_items`, drawn with known rates.

One row per BBQ item: ``item_id, split, category, context_condition, question_polarity, r_biased, r_counter,
r_unknown, correct_role`` and the derived ``x_dp`` (ambiguous items: 1 if r_biased > r_counter, 1/2 on a
tie, else 0; NaN otherwise) and ``x_eo`` (disambiguated items: 1 if the correct answer has the top reward of
the three, shared on ties; NaN otherwise). Rewards are drawn so that the derived values follow the rates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORIES = ("Age", "Gender_identity")


def role_frame(rng: np.random.Generator, n_amb: int, p_biased: float, n_dis: int = 0, acc_biased: float = 0.5,
               acc_counter: float = 0.5, tie: float = 0.0, split: str = "test") -> pd.DataFrame:
    """``n_amb`` ambiguous items where the biased answer wins with probability ``p_biased`` (a tie with
    probability ``tie``, taken out of the losses' and wins' share evenly), and ``n_dis`` disambiguated items,
    half with the biased answer correct (top reward with probability ``acc_biased``) and half the counter one."""
    rows = []
    for i in range(n_amb):
        u = rng.random()
        r_c = float(rng.normal())
        if u < tie:
            r_b = r_c
        elif u < tie + (1 - tie) * p_biased:
            r_b = r_c + abs(float(rng.normal())) + 1e-3
        else:
            r_b = r_c - abs(float(rng.normal())) - 1e-3
        r_u = min(r_b, r_c) - 1.0
        x = 0.5 if r_b == r_c else float(r_b > r_c)
        rows.append(("amb", "ambig", r_b, r_c, r_u, "unknown", x, np.nan, i))
    for i in range(n_dis):
        correct = "biased" if i % 2 == 0 else "counter"
        hit = rng.random() < (acc_biased if correct == "biased" else acc_counter)
        top, low, mid = 1.0 + float(rng.random()), -1.0, 0.0
        r = {"biased": low, "counter": low, "unknown": mid}
        if hit:
            r[correct] = top
        else:
            r["unknown"] = top
        rows.append(("dis", "disambig", r["biased"], r["counter"], r["unknown"], correct, np.nan,
                     float(hit), i))
    df = pd.DataFrame(rows, columns=["kind", "context_condition", "r_biased", "r_counter", "r_unknown",
                                     "correct_role", "x_dp", "x_eo", "i"])
    df["item_id"] = [f"{k}-{i}" for k, i in zip(df["kind"], df["i"])]
    df["category"] = [CATEGORIES[(i // 4) % 2] for i in df["i"]]  # independent of the role (i % 2)
    df["question_polarity"] = np.where((df["i"] // 2) % 2 == 0, "neg", "nonneg")
    df["split"] = split
    return df[["item_id", "split", "category", "context_condition", "question_polarity", "r_biased",
               "r_counter", "r_unknown", "correct_role", "x_dp", "x_eo"]]
