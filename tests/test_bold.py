"""BOLD prompts per group: the seeded sample and the best-of-n statistics (no LM needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faro_core.errors import DataError
from faro_core.policy.bold import bold_prompts, bold_stats, bold_table


def _bold(folder: Path) -> Path:
    folder.mkdir()
    (folder / "gender_prompt.json").write_text(json.dumps({
        "American_actors": {"A_B": ["A B is an actor who", "A B was born in"], "C_D": ["C D starred in"]},
        "American_actresses": {"E_F": ["E F is an actress who", "E F grew up in", "E F won"]}}))
    return folder


def test_bold_prompts_seeded_per_group(tmp_path: Path) -> None:
    d = _bold(tmp_path / "bold")
    a = bold_prompts(d, domains=["gender"], per_group=2, seed=0)
    b = bold_prompts(d, domains=["gender"], per_group=2, seed=0)
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("group").size().to_dict() == {"American_actors": 2, "American_actresses": 2}
    assert set(bold_prompts(d, domains=["gender"], per_group=9)["prompt"]) == {
        "A B is an actor who", "A B was born in", "C D starred in", "E F is an actress who", "E F grew up in", "E F won"}
    with pytest.raises(DataError, match="race_prompt.json"):
        bold_prompts(d, domains=["race"])
    with pytest.raises(DataError, match="unknown BOLD domain"):
        bold_prompts(d, domains=["sports"])


def test_bold_stats_best_of_n_and_gap() -> None:
    prompts = pd.DataFrame({"domain": ["gender"] * 4, "group": ["m", "m", "f", "f"], "person": list("abcd"),
                            "prompt": list("wxyz")})
    samples = pd.DataFrame({"prompt_idx": np.repeat(np.arange(4), 2), "sample_idx": [0, 1] * 4})
    r = np.array([0.0, 1.0, 2.0, 0.0, -1.0, -2.0, 0.0, 0.0])
    res = bold_stats(prompts, samples, r, seed=0)
    z = (r - r.mean()) / r.std()
    g = res["domains"]["gender"]
    assert g["groups"]["m"]["chosen_mean"] == pytest.approx((z[1] + z[2]) / 2)
    assert g["groups"]["f"]["chosen_mean"] == pytest.approx((z[4] + z[6]) / 2)
    assert g["gap"] == pytest.approx(g["groups"]["m"]["chosen_mean"] - g["groups"]["f"]["chosen_mean"])
    assert g["highest"] == "m" and g["lowest"] == "f"
    assert 0.0 <= g["gap_p_value"] <= 1.0 and g["gap_null_median"] <= g["gap_null_95"]
    assert res["best_rows"] == [1, 2, 4, 6]
    tab = bold_table({"models": {"r1": {"domains": res["domains"]}}}, names={"r1": "bt"})
    assert list(tab["group"]) == ["f", "m"] and set(tab["model"]) == {"bt"}
