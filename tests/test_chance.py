"""Chance level of DP/EO violations: group-permutation null keeps cells and anchors, flags real gaps only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faro_core.fairness.chance import chance_violation, largest_gaps, permuted_within
from faro_core.fairness.constraints import DemographicParity
from faro_core.fairness.pairs import GroupIndex, PairBatch

IDX = GroupIndex(response_groups=["A", "B", "C", "D"], pair_groups=["A", "B", "C", "D"], strata=["s0", "s1"])


def _batch(n: int, rng: np.random.Generator, bias: float) -> PairBatch:
    """Pairs of a group-naming response against a neutral one (every 4th pair: against another group's).
    Group A's response wins with probability 0.2 + bias, the others with 0.2."""
    cg = rng.integers(0, 4, n)
    rg = np.where(np.arange(n) % 4 == 0, rng.integers(0, 4, n), -1)
    p = np.where(cg == 0, 0.2 + bias, 0.2)
    win = rng.random(n) < p
    t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt)  # noqa: E731
    label = rng.integers(0, 2, n).astype(float)
    return PairBatch(t(np.where(win, 1.0, -1.0)), t(np.zeros(n)), t(cg, torch.long), t(rg, torch.long),
                     t(cg, torch.long), t(rng.integers(0, 2, n), torch.long), t(label),
                     t(rng.integers(0, 2, n), torch.long), t(np.full(n, np.nan)), t(np.full(n, np.nan)))


@pytest.mark.parametrize("bias", [0.2, -0.15])
def test_observed_gap_is_the_constraints_own_violation(bias: float):
    """The chance module's gap on the unpermuted outcomes equals the trainer's strict violation (DP with both
    partner kinds, EO), for a favoured group and for a disfavoured one (a gap below the anchor counts too)."""
    from faro_core.fairness.constraints import EqualizedOdds

    b = _batch(3000, np.random.default_rng(0), bias=bias)
    for cls in (DemographicParity, EqualizedOdds):
        c = cls(min_count=30).bind(IDX)
        vals, grp, anc, n_groups, n_anchor = c.strict_members(b)
        assert n_groups == 4
        vals, grp, anc = vals.numpy(), grp.numpy(), anc.numpy()
        gap = largest_gaps(vals[None, :].astype(float), grp, anc, n_groups, n_anchor, 30)[0]
        assert gap == pytest.approx(float(c.strict(b).max()), abs=1e-6)


def test_permutation_keeps_each_anchors_outcomes():
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 2, 500).astype(float)
    anchors = rng.integers(0, 4, 500)
    perm = permuted_within(vals, anchors, 20, rng)
    for a in range(4):
        assert all(sorted(row[anchors == a]) == sorted(vals[anchors == a]) for row in perm)
    assert not all((row == vals).all() for row in perm)


@pytest.mark.parametrize("bias", [0.3, -0.15])
def test_a_real_gap_is_above_chance_and_no_gap_is_not(bias: float):
    rng = np.random.default_rng(1)
    biased = chance_violation(_batch(4000, rng, bias=bias), IDX, kinds=["dp"], min_count=30, n_perm=100)["dp"]
    assert biased["observed"] > biased["chance_p90"] and biased["p_value"] < 0.02
    fair_p = [chance_violation(_batch(1000, np.random.default_rng(s), bias=0.0), IDX, kinds=["dp"], min_count=30,
                               n_perm=50, seed=s)["dp"] for s in range(12)]
    # with no group effect the observed violation is a draw from the null: typical p-values, not tiny ones
    assert np.median([r["p_value"] for r in fair_p]) > 0.2
    assert all(r["chance_median"] > 0.02 for r in fair_p)  # the floor: max of noisy cells is never 0


def test_no_estimable_cell_reports_nan_and_cf_is_skipped():
    rng = np.random.default_rng(2)
    out = chance_violation(_batch(40, rng, bias=0.0), IDX, kinds=["dp", "cf"], min_count=1000, n_perm=5)
    assert set(out) == {"dp"}
    assert np.isnan(out["dp"]["observed"]) and np.isnan(out["dp"]["p_value"])


def test_selection_tier_within_chance():
    """The trainer's middle selection tier: an infeasible iterate counts as 'within chance' only when every
    missed constraint is DP/EO with a permutation p-value >= select_chance."""
    from faro_core.fairness.constraint_set import ConstraintSet
    from faro_core.train.config import FaroConfig
    from faro_core.train.selection import within_chance

    cfg = FaroConfig(min_count=30, select_chance=0.05)
    dp_strict = ConstraintSet.parse("dp", 0.0, IDX, min_count=30)  # eps 0: every noisy gap misses it
    fair = _batch(2000, np.random.default_rng(3), bias=0.0)
    biased = _batch(2000, np.random.default_rng(3), bias=0.3)
    assert within_chance(fair, dp_strict, IDX, cfg)
    assert not within_chance(biased, dp_strict, IDX, cfg)
    # CF has no permutation null: a missed CF constraint is never "chance"
    cf = ConstraintSet.parse("cf", 0.0, IDX, min_count=1)
    twins = PairBatch(*[getattr(fair, f) for f in ("r_chosen", "r_rejected", "chosen_group", "rejected_group",
                                                    "group", "stratum", "label", "order")],
                      fair.r_chosen + 1.0, fair.r_rejected)
    assert not within_chance(twins, cf, IDX, cfg)


# ---------------------------------------------------------------------------------------------------
# the role attribute: swap roles within an item (DP), permute the correct answer's role within strata (EO)
# ---------------------------------------------------------------------------------------------------
def test_role_dp_bias_is_above_chance_with_resolvable_p_and_exact_chance_mean():
    """BT's 59% on 778 ambiguous items is far above chance: with 2,000 within-item swaps the p-value is at
    its floor 1/2001 (< 0.01 is resolvable); the exact chance level E|2B - n| / 2n (about 0.4 / sqrt(n)) matches
    the permutation null's mean."""
    from role_fixture import role_frame

    from faro_core.fairness.chance import role_chance

    items = role_frame(np.random.default_rng(0), 778, 0.59, n_dis=0)
    out = role_chance(items, kinds=["dp"], n_perm=2000)["dp"]
    assert out["n_perm"] == 2000 and out["n"] == 778
    assert out["observed"] == pytest.approx(abs(items["x_dp"].mean() - 0.5))
    assert out["p_value"] == pytest.approx(1 / 2001) and out["observed"] > 3 * out["chance_p90"]
    assert out["chance_mean"] == pytest.approx(0.5 * np.sqrt(2 / np.pi) / np.sqrt(778), rel=0.03)
    fair = [role_chance(role_frame(np.random.default_rng(s), 778, 0.5), kinds=["dp"], n_perm=1000, seed=s)["dp"]
            for s in range(10)]
    assert np.median([r["p_value"] for r in fair]) > 0.2
    for r in fair:
        assert r["chance_median"] == pytest.approx(r["chance_mean"], rel=0.25)


def test_role_eo_gap_is_above_chance_and_roles_stay_in_their_strata():
    """A gap of accuracies (0.6 vs 0.35 over 400 items per role) has p < 0.01; with equal accuracies p-values
    are typical. The null permutes the correct answer's role within category x polarity only: when each
    stratum holds one role, nothing moves and p = 1."""
    from role_fixture import role_frame

    from faro_core.fairness.chance import role_chance

    biased = role_frame(np.random.default_rng(1), 0, 0.5, n_dis=800, acc_biased=0.6, acc_counter=0.35)
    out = role_chance(biased, kinds=["eo"], n_perm=2000)["eo"]
    gap = (biased[biased.correct_role == "biased"].x_eo.mean() - biased[biased.correct_role == "counter"].x_eo.mean())
    assert out["observed"] == pytest.approx(abs(gap) / 2) and out["p_value"] < 0.01
    fair = [role_chance(role_frame(np.random.default_rng(s), 0, 0.5, n_dis=400, acc_biased=0.45,
                                   acc_counter=0.45), kinds=["eo"], n_perm=500, seed=s)["eo"] for s in range(10)]
    assert np.median([r["p_value"] for r in fair]) > 0.2
    confounded = biased.assign(category=np.where(biased.correct_role == "biased", "Age", "Gender_identity"))
    assert role_chance(confounded, kinds=["eo"], n_perm=200)["eo"]["p_value"] == pytest.approx(1.0)
