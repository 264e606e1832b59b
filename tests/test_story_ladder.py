"""The Overview's story names the smallest slack its certificate meets when a run misses its own ε."""

from __future__ import annotations

from faro_core.results.story import certified_at, headline, sentence


def _story(upper: float, certified: bool) -> dict:
    rate = {"value": 0.55, "lo": 0.52, "hi": 0.59, "n": 789}
    acc = {"value": 0.74, "lo": 0.72, "hi": 0.76}
    return {"rate": {"bt": {**rate, "value": 0.59}, "faro": rate}, "epsilon": 0.05,
            "certificate": {"faro": {"certified": certified, "upper": upper, "n_to_certify": None},
                            "bt": {"above_epsilon": True, "lower": 0.055}},
            "accuracy": {"bt": acc, "faro": acc, "difference": {"value": 0.006, "lo": -0.005, "hi": 0.016}}}


def test_certified_at_is_the_smallest_slack_the_bound_meets():
    assert certified_at(0.086) == 0.1 and certified_at(0.05) == 0.05 and certified_at(0.01) == 0.02
    assert certified_at(0.35) is None


def test_story_says_where_the_certificate_holds():
    missed = _story(0.086, certified=False)
    assert "certified at ε = 0.1" in headline(missed)
    text = sentence(missed)
    assert "not certified at ε = 0.05" in text and "certified at ε = 0.1 (the same bound, 0.086" in text
    held = _story(0.041, certified=True)
    assert "certified at ε = 0.05" in headline(held) and "certified at ε = 0.1" not in sentence(held)
    assert "certified" not in headline(_story(0.4, certified=False))
