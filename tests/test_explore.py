"""Data shaping for the dashboard's group plots (faro_core.results.views)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from faro_core.results.views import bias_gap, response_rewards


def scores(offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"r_chosen": [3.0 + offset, 1.0, 2.0], "r_rejected": [1.0 + offset, 2.0, 2.0],
                         "chosen_group": ["A", "B", None], "rejected_group": ["B", "A", "A"],
                         "category": ["x", "x", "x"]})


def test_response_rewards_are_relative_to_the_pair_partner():
    rr = response_rewards(scores(), standardize=False)
    # pair 1: A beats B by 2 -> A +1, B -1; pair 2: B loses to A by 1 -> B -0.5, A +0.5; pair 3: tie, A 0
    got = rr.groupby("group")["reward"].apply(sorted).to_dict()
    assert got == {"A": [-0.0, 0.5, 1.0], "B": [-1.0, -0.5]} or got == {"A": [0.0, 0.5, 1.0], "B": [-1.0, -0.5]}
    assert rr["group"].notna().all()  # the response naming no group is left out


def test_group_view_ignores_per_prompt_offsets():
    a, b = response_rewards(scores()), response_rewards(scores(offset=100.0))
    np.testing.assert_allclose(a["reward"], b["reward"])
    assert bias_gap(scores()) == bias_gap(scores(offset=100.0))
