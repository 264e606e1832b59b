"""Certificate: bounds cover a known true violation at the promised rate; certified/not as expected; CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from faro_core.evaluate.certify import bernstein_ucb, certify, hoeffding_diff_ucb
from faro_core.fairness.pairs import GroupIndex, PairBatch

MU_A, N_A, N_B = 0.3, 150, 450  # group A's responses ~ N(0.3, 1), group B's ~ N(0, 1); counts fixed


def _batch(rng: np.random.Generator, mu_a: float = MU_A, cf_scale: float = 0.05) -> PairBatch:
    """Pairs whose chosen response names A (first N_A pairs) or B; rejected responses name no group."""
    n = N_A + N_B
    g = np.r_[np.zeros(N_A), np.ones(N_B)].astype(np.int64)
    r = np.where(g == 0, mu_a, 0.0) + rng.standard_normal(n)
    rej = rng.standard_normal(n)  # rejected responses name no group (left out of DP), but have twins (CF)
    cf_c = r + cf_scale * rng.standard_normal(n)
    cf_r = rej + cf_scale * rng.standard_normal(n)
    t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return PairBatch(t(r), t(rej), t(g, torch.long), t(np.full(n, -1), torch.long), t(g, torch.long),
                     t(np.zeros(n), torch.long), t(np.ones(n)), t(rng.integers(0, 2, n), torch.long),
                     t(cf_c), t(cf_r))


INDEX = GroupIndex(response_groups=["A", "B"], pair_groups=["A", "B"], strata=["all"])


def _true_dp() -> dict[str, float]:
    """True DP disparities of A and B under the selection rule DP uses (a response is selected when it beats
    its pair partner, here a N(0, 1) response naming no group): rate_g = P(r_g > r_partner) = Phi(mu_g / sqrt 2),
    minus the stratum's rate, the count-weighted mean of both groups' rates."""
    wa = N_A / (N_A + N_B)
    pa, pb = norm.cdf(MU_A / math.sqrt(2)), 0.5
    ref = wa * pa + (1 - wa) * pb
    return {"A": pa - ref, "B": pb - ref}


def test_hoeffding_bound_shrinks_with_n_and_grows_with_confidence() -> None:
    assert hoeffding_diff_ucb(0.0, 100, 1000, 0.05) > hoeffding_diff_ucb(0.0, 400, 1000, 0.05) > 0
    assert hoeffding_diff_ucb(0.0, 100, 1000, 0.001) > hoeffding_diff_ucb(0.0, 100, 1000, 0.05)
    assert hoeffding_diff_ucb(0.1, 100, 100, 0.05) == 0.1  # the group is its whole stratum: d = 0 exactly
    assert bernstein_ucb(np.zeros(100), 1.0, 0.05) < bernstein_ucb(np.full(100, 0.5), 1.0, 0.05)


def test_bounds_equal_their_formulas() -> None:
    """The bounds' values, written out: Hoeffding on a difference of two independent means (weight w = n_o /
    n_ref on the half-width) and Maurer & Pontil's empirical Bernstein bound on values scaled to [0, 1]."""
    assert hoeffding_diff_ucb(0.02, 150, 600, 0.05) == pytest.approx(
        0.02 + 0.75 * math.sqrt(math.log(20) / 2 * (1 / 150 + 1 / 450)), rel=1e-12)
    x = np.random.default_rng(0).uniform(0, 2, 80)  # values in [0, B] with B = 2
    z, lg = x / 2, math.log(2 / 0.01)
    expected = 2 * (z.mean() + math.sqrt(2 * z.var(ddof=1) * lg / 80) + 7 * lg / (3 * 79))
    assert bernstein_ucb(x, 2.0, 0.01) == pytest.approx(expected, rel=1e-12)


def test_certificate_rows_use_the_union_bounded_delta() -> None:
    """Each DP row's upper bound is Hoeffding's at delta / m from its own empirical value and counts (A: 150 of
    the stratum's 600 responses, B: 450), so dropping the union bound or the weight would show."""
    cert = certify(_batch(np.random.default_rng(0)), INDEX, ["dp"], 0.05, delta=0.05, min_count=10)
    m = cert["m"]
    assert m == 4 and len(cert["bounds"]) == 4
    for r in cert["bounds"]:
        n_a = N_A if "[A|" in r["name"] else N_B
        assert r["upper"] == pytest.approx(hoeffding_diff_ucb(r["empirical"], n_a, N_A + N_B, 0.05 / m), abs=1e-9)


def test_dp_bound_covers_the_truth_in_95_percent_of_200_repetitions() -> None:
    truth = _true_dp()
    covered = 0
    for seed in range(200):
        cert = certify(_batch(np.random.default_rng(seed)), INDEX, ["dp"], 0.05, delta=0.05, min_count=10)
        rows = {r["name"]: r["upper"] for r in cert["bounds"]}
        ok = all(rows[f"dp[{g}|all|vs-none]+"] >= d and rows[f"dp[{g}|all|vs-none]-"] >= -d for g, d in truth.items())
        covered += ok
    assert covered / 200 >= 0.95, covered


def test_cf_bound_covers_the_truth_in_95_percent_of_200_repetitions() -> None:
    # |dz| with dz = 0.05 * sqrt(2) * N(0,1) / std(r): truth ~ E|N(0, s^2)| = s sqrt(2/pi)
    covered = 0
    for seed in range(200):
        b = _batch(np.random.default_rng(seed), cf_scale=0.05)
        scale = float(torch.cat([b.r_chosen, b.r_rejected]).std(unbiased=False))
        truth = 0.05 * math.sqrt(2 / math.pi) / scale
        cert = certify(b, INDEX, ["cf"], 0.05, delta=0.05, min_count=10)
        covered += all(r["upper"] >= truth for r in cert["bounds"])
    assert covered / 200 >= 0.95, covered


def test_certified_when_fair_and_not_when_biased() -> None:
    rng = np.random.default_rng(0)
    fair = certify(_batch(rng, mu_a=0.0), INDEX, ["dp"], 0.2, delta=0.05, min_count=10)
    biased = certify(_batch(rng, mu_a=1.5), INDEX, ["dp"], 0.2, delta=0.05, min_count=10)
    assert fair["certified"] is True and biased["certified"] is False
    for r in fair["bounds"]:
        assert r["upper"] >= r["empirical"] and r["slack"] == pytest.approx(0.2 - r["upper"])
        assert r["driving_n"] == min(N_A, N_B)  # the smaller of the group and the rest of its stratum
    assert fair["m"] == 4 and fair["delta_per_constraint"] == pytest.approx(0.05 / 4)


def test_small_cells_are_uncovered_not_certified() -> None:
    cert = certify(_batch(np.random.default_rng(0)), INDEX, ["dp"], 1.0, delta=0.05, min_count=1000)
    assert cert["certified"] is False and cert["bounds"] == [] and len(cert["uncovered"]) == 2


def test_bad_delta_and_kind_are_user_errors() -> None:
    from faro_core.errors import FaroError

    b = _batch(np.random.default_rng(0))
    with pytest.raises(FaroError):
        certify(b, INDEX, ["dp"], 0.05, delta=0.0)
    with pytest.raises(FaroError):
        certify(b, INDEX, ["xx"], 0.05)
