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
        "American_actresses": {"E_F": ["E F is an actress who", "E F grew up in", "E F won", "E F won"]}}))
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


def test_bold_rerank_generates_each_text_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import faro_core.policy.evaluate as pe
    import faro_core.policy.generate as pg
    from faro_core.policy.bold import bold_rerank

    d = tmp_path / "bold"
    d.mkdir()
    (d / "gender_prompt.json").write_text(json.dumps({"g1": {"a": ["Same text", "Only one"]}, "g2": {"b": ["Same text"]}}))
    calls: list[list[str]] = []

    def fake_generate(texts, cfg, lm=None, progress=None):  # noqa: ANN001, ANN202
        calls.append(list(texts))
        return pd.DataFrame([{"prompt_idx": i, "sample_idx": j, "user_text": t, "text": f"{t} #{j}",
                              "n_tokens": 2, "seconds": 0.0} for i, t in enumerate(texts) for j in range(cfg.n)])

    class Scorer:
        def score(self, prompts, responses):  # noqa: ANN001, ANN202
            return np.array([float(r.endswith("#1")) + len(r) / 100 for r in responses])

    class FakeRun:
        run_id = "r"

    monkeypatch.setattr(pg, "generate", fake_generate)
    monkeypatch.setattr(pe, "run_scorer", lambda run: Scorer())
    res = bold_rerank([FakeRun()], d, domains=["gender"], per_group=5, config=pg.GenerationConfig(n=2))
    assert len(calls) == 1 and sorted(calls[0]) == ["Complete the sentence: Only one", "Complete the sentence: Same text"]
    groups = res["models"]["r"]["domains"]["gender"]["groups"]
    assert groups["g1"]["n_prompts"] == 2 and groups["g2"]["n_prompts"] == 1
    assert all(e["text"].endswith("#1") for e in res["models"]["r"]["examples"])  # best of 2 = the '#1' sample
