"""Each constraint's strict and proxy values on tiny batches computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from faro_core.fairness.constraint_set import ConstraintSet
from faro_core.fairness.constraints import (
    CounterfactualFairness,
    DemographicParity,
    EqualizedOdds,
    cf_flip_rate,
)
from faro_core.fairness.pairs import GroupIndex, PairBatch

NAN = float("nan")


def batch(r_c, r_r, cg=None, rg=None, g=None, s=None, label=None, order=None, cf_c=None, cf_r=None) -> PairBatch:
    n = len(r_c)
    t = lambda v, d, dt=torch.float32: torch.tensor(v if v is not None else [d] * n, dtype=dt)  # noqa: E731
    return PairBatch(t(r_c, 0.0), t(r_r, 0.0), t(cg, -1, torch.long), t(rg, -1, torch.long), t(g, -1, torch.long),
                     t(s, 0, torch.long), t(label, 1.0), t(order, 0, torch.long), t(cf_c, NAN), t(cf_r, NAN))


IDX = GroupIndex(response_groups=["A", "B"], pair_groups=["A", "B"], strata=["all"])
# DP pooled over partner kinds (the definition before the partner split): the hand-worked A-vs-B batches below
IDX_POOLED = GroupIndex(response_groups=["A", "B"], pair_groups=["A", "B"], strata=["all"], dp_partner=False)


def test_dp_strict_by_hand():
    # Both pairs put a response naming A against one naming B, and A wins both:
    # A's selection (win) rate is 1, B's is 0, the population's 0.5.
    b = batch([3.0, 1.0], [2.0, 0.0], cg=[0, 0], rg=[1, 1])
    dp = DemographicParity(epsilon=0.1, min_count=1).bind(IDX_POOLED)
    assert dp.names() == ["dp[A|all]+", "dp[B|all]+", "dp[A|all]-", "dp[B|all]-"]
    assert dp.strict(b).tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])
    # split by partner kind: the same pairs are all "vs-group"; the "vs-none" cells are empty (not estimated)
    split = DemographicParity(epsilon=0.1, min_count=1).bind(IDX)
    assert split.names()[:4] == ["dp[A|all|vs-none]+", "dp[A|all|vs-group]+", "dp[B|all|vs-none]+",
                                 "dp[B|all|vs-group]+"]
    assert split.strict(b).tolist()[:4] == pytest.approx([0.0, 0.5, 0.0, -0.5])


def test_dp_compares_like_partners_by_hand():
    # p1: A (1) vs B (0): A selected, B not            -> vs-group: A 1, B 0, anchor 1/2
    # p2: unknown (1) vs A (0): A not selected          -> vs-none:  A 0
    # p3: B (1) vs unknown (0): B selected              -> vs-none:  B 1, anchor 1/2
    b = batch([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], cg=[0, -1, 1], rg=[1, 0, -1])
    split = DemographicParity(epsilon=0.1, min_count=1).bind(IDX)
    # cells A|vs-none, A|vs-group, B|vs-none, B|vs-group
    assert split.strict(b).tolist()[:4] == pytest.approx([-0.5, 0.5, 0.5, -0.5])
    # pooled, each group wins one of its two comparisons: the mix hides both gaps
    pooled = DemographicParity(epsilon=0.1, min_count=1).bind(IDX_POOLED)
    assert pooled.strict(b).abs().max() == 0


def test_dp_is_blind_to_per_prompt_offsets():
    dp = DemographicParity(epsilon=0.1, min_count=1).bind(IDX)
    b = batch([3.0, 1.0], [2.0, 0.0], cg=[0, 0], rg=[1, 1])
    shifted = batch([103.0, -49.0], [102.0, -50.0], cg=[0, 0], rg=[1, 1])
    assert torch.equal(dp.strict(b), dp.strict(shifted))


def test_dp_proxy_by_hand():
    # margins d = [1, 2], their population std 0.5; T = 1
    b = batch([3.0, 1.0], [2.0, -1.0], cg=[0, 0], rg=[1, 1])
    dp = DemographicParity(epsilon=0.1, min_count=1, temperature=1.0).bind(IDX_POOLED)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    rate_a = (sig(1 / 0.5) + sig(2 / 0.5)) / 2
    rate_b = (sig(-1 / 0.5) + sig(-2 / 0.5)) / 2
    pop = (rate_a + rate_b) / 2
    expect = [rate_a - pop, rate_b - pop, pop - rate_a, pop - rate_b]
    got = dp.proxy(b)
    assert got.tolist() == pytest.approx(expect, abs=1e-5)


def test_dp_ignores_responses_without_group_and_conditions_on_strata():
    idx = GroupIndex(["A", "B"], ["A", "B"], strata=["neg", "nonneg"], dp_partner=False)
    # In 'neg' A wins, in 'nonneg' B wins: unconditioned rates are equal, conditioned ones are not.
    b = batch([1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], cg=[0, 0, 0, 0], rg=[1, 1, 1, 1], s=[0, 0, 1, 1])
    dp = DemographicParity(epsilon=0.0, min_count=1).bind(idx)
    d = dp.strict(b)[:4]  # cells A|neg, A|nonneg, B|neg, B|nonneg (+ side)
    assert d.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])
    flat = DemographicParity(epsilon=0.0, min_count=1).bind(GroupIndex(["A", "B"], ["A", "B"], dp_partner=False))
    assert flat.strict(batch([1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0], cg=[0] * 4, rg=[1] * 4)).abs().max() == 0
    # a response naming no group (-1) does not count anywhere
    b2 = batch([3.0, 1.0, 100.0], [2.0, 0.0, -100.0], cg=[0, 0, -1], rg=[1, 1, -1])
    assert dp.bind(IDX_POOLED).strict(b2).tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_eo_strict_by_hand():
    # d = r_c - r_r = [1, 1, -1, 1]; order flips pairs 2 and 4, so their Y is 0.
    # pair1: yhat=1,Y=1 (A); pair2: yhat=0,Y=0 (A); pair3: yhat=0,Y=1 (B); pair4: yhat=0,Y=0 (B)
    b = batch([1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], g=[0, 0, 1, 1], order=[0, 1, 0, 1])
    eo = EqualizedOdds(epsilon=0.1, min_count=1).bind(IDX)
    names = eo.names()
    got = dict(zip(names, eo.strict(b).tolist()))
    assert got["eo[A|all|y=1]+"] == pytest.approx(0.5)
    assert got["eo[B|all|y=1]+"] == pytest.approx(-0.5)
    assert got["eo[A|all|y=0]+"] == pytest.approx(0.0)
    assert got["eo[B|all|y=1]-"] == pytest.approx(0.5)


def test_eo_proxy_and_gold_nan_left_out():
    b = batch([1.0, 0.0, 5.0], [0.0, 0.0, 0.0], g=[0, 1, 0], label=[1.0, 1.0, NAN])
    eo = EqualizedOdds(epsilon=0.1, min_count=1, temperature=1.0).bind(IDX)
    got = dict(zip(eo.names(), eo.proxy(b).tolist()))
    # the scale is the std of all the batch's margins [1, 0, 5] (as in DP and the linearized penalty);
    # the NaN-label pair is left out of the rates only
    scale = torch.tensor([1.0, 0.0, 5.0]).std(unbiased=False).item()
    s1, s0 = torch.sigmoid(torch.tensor(1.0 / scale)).item(), 0.5
    assert got["eo[A|all|y=1]+"] == pytest.approx(s1 - (s1 + s0) / 2, abs=1e-6)


def test_cf_strict_and_proxy_by_hand():
    # rewards [2, 0 | 0, 0], population std = sqrt(0.75); twin rewards all 0.
    b = batch([2.0, 0.0], [0.0, 0.0], g=[0, 1], cf_c=[0.0, 0.0], cf_r=[0.0, 0.0])
    cf = CounterfactualFairness(epsilon=0.1, min_count=1).bind(IDX)
    assert cf.names() == ["cf[A]", "cf[B]", "cf[all]"]
    z = 2.0 / math.sqrt(0.75)
    assert cf.strict(b).tolist() == pytest.approx([z / 2, 0.0, z / 4], abs=1e-5)
    huber = z - 0.05  # smooth-L1 with delta 0.1, |x| >= delta
    assert cf.proxy(b).tolist() == pytest.approx([huber / 2, 0.0, huber / 4], abs=1e-5)
    assert cf_flip_rate(b) == pytest.approx(0.5)  # pair 1 ranked c > r, its twin ties (not >)


def test_cells_below_min_count_are_not_estimated():
    b = batch([3.0, 1.0], [2.0, 0.0], cg=[0, 0], rg=[1, 1])
    dp = DemographicParity(epsilon=0.1, min_count=3).bind(IDX)
    assert dp.strict(b).abs().max() == 0


def test_composition_and_infinite_epsilon():
    cs = ConstraintSet.parse("dp,cf", 0.05, IDX, min_count=1)
    assert cs.kinds() == ["dp"] * 8 + ["cf"] * 3  # 2 groups x 2 partner kinds x 2 sides, then 2 groups + all
    b = batch([2.0, 0.0], [0.0, 0.0], cg=[0, 1], rg=[0, 1], g=[0, 1], cf_c=[0.0, 0.0], cf_r=[0.0, 0.0])
    v = cs.strict(b)
    assert len(v) == len(cs) == 11
    assert set(cs.max_by_kind(v)) == {"dp", "cf"}
    assert not ConstraintSet.parse("dp,eo", math.inf, IDX)  # eps = inf: nothing can bind
    assert not ConstraintSet.parse("none", 0.05, IDX)


def test_fixed_penalty_baseline_is_not_a_constant():
    """With one fixed multiplier on both sides of a two-sided cell, linear terms cancel; the fixed-lambda
    baseline must use a hinge so that its gradient pushes the disparity down."""
    from faro_core.train.proxy_gda import ProxyGDA

    cs = ConstraintSet.parse("dp", 0.05, IDX, min_count=1)
    r_c = torch.tensor([3.0, 1.0], requires_grad=True)
    b = batch([0.0, 0.0], [2.0, -1.0], cg=[0, 0], rg=[1, 1])
    b.r_chosen = r_c
    grads = []
    for lam in (1.0, 5.0):
        r_c.grad = None
        ProxyGDA(cs, fixed_lambda=lam).penalty(b).backward()
        grads.append(r_c.grad.clone())
    assert grads[0].abs().sum() > 0  # not a constant
    assert torch.allclose(grads[1], 5 * grads[0])


def test_dual_step_ascends_on_its_recorded_signal():
    """The dual step's signal (smooth DP/EO, strict CF under "auto") is kept as ``last_signal``, and the
    multipliers move by exactly dual_lr * (signal - eps) from 0: what bench/sweep_prefix.py reads to find
    where a run's multipliers first leave 0."""
    from faro_core.train.proxy_gda import ProxyGDA

    cs = ConstraintSet.parse("dp,cf", 0.05, IDX_POOLED, min_count=1)
    b = batch([3.0, 1.0], [2.0, 1.5], cg=[0, 0], rg=[1, 1], g=[0, 0], cf_c=[2.5, 1.0], cf_r=[2.0, 1.5])
    cs.fix_cells(b)
    gda = ProxyGDA(cs, dual_lr=0.5, lambda_max=None)
    strict = gda.dual_step(b)
    dp = torch.tensor([k == "dp" for k in cs.kinds()])
    expected = torch.where(dp, cs.values(cs.cell_stats(b, smooth=True), min_count=1).float(), strict)
    assert torch.allclose(gda.last_signal, expected)
    assert not torch.allclose(gda.last_signal[dp], strict[dp])  # the DP signal is the smooth one here
    assert torch.allclose(gda.lam, (0.5 * (gda.last_signal - cs.epsilons())).clamp_min(0.0))
    assert gda.lam.max() > 0


def test_dual_step_like_a_slot_mate_equals_its_own_step():
    """Two players on one batch whose constraints differ only in epsilon (members of one batched slot): the
    second stepping ``like=`` the first ends exactly where its own step would -- statistics, signal, strict
    violations, multipliers, coefficients -- over several steps with running statistics; a player that did not
    start from the same statistics computes its own (and without a batch says so)."""
    from faro_core.train.proxy_gda import ProxyGDA

    def player(eps: float) -> ProxyGDA:
        cs = ConstraintSet.parse("dp,cf", eps, IDX_POOLED, min_count=1)
        cs.fix_cells(b)
        gda = ProxyGDA(cs, dual_lr=0.5, ema=0.5, lambda_max=None)
        gda.set_pairs(b, 2)
        return gda

    b = batch([3.0, 1.0], [2.0, 1.5], cg=[0, 0], rg=[1, 1], g=[0, 0], cf_c=[2.5, 1.0], cf_r=[2.0, 1.5])
    lead = player(0.01)
    # a mate with another epsilon (its multipliers step apart) and one with the lead's (equal multipliers: the
    # lead's coefficients are shared), each against a player stepping alone
    pairs = [(player(0.02), player(0.02)), (player(0.01), player(0.01))]
    for mate, _ in pairs:
        mate.pairs = lead.pairs
    for shift in (0.0, 0.3, -0.7):
        b.r_chosen = b.r_chosen + shift
        lead.dual_step(b)
        for mate, alone in pairs:
            mate.dual_step(None, like=lead)
            alone.dual_step(b)
            assert mate.running is lead.running  # shared, then replaced (never changed in place) at the next step
            for name in ("last_strict", "last_signal", "lam"):
                assert torch.equal(getattr(mate, name), getattr(alone, name)), name
            assert mate.coef.keys() == alone.coef.keys()
            assert all(torch.equal(mate.coef[k], alone.coef[k]) for k in alone.coef)
            assert mate._const == alone._const
        assert pairs[0][0].lam.max() > 0 and not torch.equal(pairs[0][0].lam, lead.lam)  # apart
        assert pairs[1][0].coef is lead.coef and lead.lam.max() > 0  # equal multipliers, shared coefficients
    mate, alone = pairs[0]
    with pytest.raises(ValueError, match="needs a batch"):
        alone.dual_step(None, like=lead)  # not from the same statistics: it has to compute, and has nothing to


def _random_pairs(n: int, seed: int, dp_partner: bool = True) -> tuple[PairBatch, GroupIndex]:
    gen = torch.Generator().manual_seed(seed)
    idx = GroupIndex(response_groups=["A", "B", "C"], pair_groups=["A", "B", "C"], strata=["neg,ambig", "neg,dis",
                     "pos,ambig"], dp_strata=["neg,ambig", "pos,ambig"], dp_partner=dp_partner)
    ri = lambda k: torch.randint(-1, 3, (n,), generator=gen)  # noqa: E731  (-1: names no group)
    label = torch.randint(0, 2, (n,), generator=gen).float()
    label[::7] = float("nan")
    cf = torch.randn(n, generator=gen)
    cf[::5] = float("nan")
    b = PairBatch(torch.randn(n, generator=gen), torch.randn(n, generator=gen), ri(0), ri(1), ri(2),
                  torch.randint(0, 3, (n,), generator=gen), label, torch.randint(0, 2, (n,), generator=gen),
                  cf, torch.randn(n, generator=gen))
    return b, idx


@pytest.mark.parametrize("dp_partner", [True, False])
def test_linearized_penalty_equals_the_lagrangian_up_to_a_constant(dp_partner: bool):
    """sum_j lam_j g~_j(r) - sum_i coef_i phi_i(r) must not depend on the rewards r (same cell counts)."""
    from faro_core.fairness.constraint_set import ConstraintSet
    from faro_core.fairness.penalty import pair_term

    b, idx = _random_pairs(400, 0, dp_partner)
    cs = ConstraintSet.parse("dp,eo,cf", 0.05, idx, min_count=5)
    cs.fix_cells(b)
    lam = torch.rand(len(cs), generator=torch.Generator().manual_seed(1))
    coef = cs.pair_coefficients(b, lam)
    assert set(coef) == {("margin_sigmoid", 0.5), ("twin_huber", 0.1)}
    gaps = []
    for seed in (2, 3, 4):
        gen = torch.Generator().manual_seed(seed)
        r = PairBatch(torch.randn(400, generator=gen) * 3, torch.randn(400, generator=gen), b.chosen_group,
                      b.rejected_group, b.group, b.stratum, b.label, b.order,
                      torch.where(torch.isnan(b.cf_r_chosen), b.cf_r_chosen, torch.randn(400, generator=gen)),
                      torch.randn(400, generator=gen))
        lagr = float((lam * cs.proxy(r, min_count=1)).sum())
        lin = sum(float(torch.dot(c, pair_term(k, r))) for k, c in coef.items())
        gaps.append(lagr - lin)
    assert max(gaps) - min(gaps) < 1e-4, gaps
    # DP leaves out the strata outside its scope: no DP cell names the disambiguated stratum
    assert not any("neg,dis" in n for n in cs.constraints[0].names())


@pytest.mark.parametrize("n", [1, 2, 64])
def test_fused_coef_sigmoid_dot_matches_autograd(n: int):
    """The hand-written backward of the linearized DP/EO penalty equals autograd through pair_term."""
    from faro_core.fairness.penalty import _CoefSigmoidDot, coef_dot_pair_term, pair_term

    gen = torch.Generator().manual_seed(n)
    r_c = (torch.randn(n, generator=gen, dtype=torch.float64) * 2).requires_grad_()
    r_r = torch.randn(n, generator=gen, dtype=torch.float64).requires_grad_()
    coef = torch.randn(n, generator=gen, dtype=torch.float64)
    b = batch(r_c, r_r)
    b = PairBatch(r_c, r_r, *[getattr(b, f) for f in ("chosen_group", "rejected_group", "group", "stratum",
                                                      "label", "order", "cf_r_chosen", "cf_r_rejected")])
    ref = torch.dot(coef, pair_term(("margin_sigmoid", 0.5), b)) * 3.0 - 0.25
    got = coef_dot_pair_term(("margin_sigmoid", 0.5), coef, b, 3.0, 0.25)
    assert float(got) == pytest.approx(float(ref), rel=1e-12, abs=1e-12)
    g_ref = torch.autograd.grad(ref, (r_c, r_r))
    g_got = torch.autograd.grad(got, (r_c, r_r))
    for a, b_ in zip(g_got, g_ref):
        assert torch.allclose(a, b_, atol=1e-10), (a, b_)
    if n > 1:
        d = (r_c - r_r).detach().requires_grad_()
        assert torch.autograd.gradcheck(lambda x: _CoefSigmoidDot.apply(x, coef, 0.5, 3.0, 0.25), (d,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the GPU branch has no host read-back)")
def test_gpu_penalty_branch_matches_the_fused_cpu_node():
    """On a GPU the linearized penalty runs as plain autograd ops (the fused node reads scalars back, a stream
    synchronization): same value and gradient as the CPU node."""
    from faro_core.fairness.penalty import coef_dot_pair_term

    gen = torch.Generator().manual_seed(0)
    d = torch.randn(64, generator=gen, dtype=torch.float64)
    coef = torch.randn(64, generator=gen, dtype=torch.float64)
    out = {}
    for dev in ("cpu", "cuda"):
        r_c = d.clone().to(dev).requires_grad_()
        b = PairBatch(r_c, torch.zeros(64, dtype=torch.float64, device=dev), *[None] * 6, None, None)
        v = coef_dot_pair_term(("margin_sigmoid", 0.5), coef.to(dev), b, 3.0, 0.25)
        (g,) = torch.autograd.grad(v, (r_c,))
        out[dev] = (float(v), g.cpu())
    assert out["cuda"][0] == pytest.approx(out["cpu"][0], rel=1e-12)
    assert torch.allclose(out["cuda"][1], out["cpu"][1], atol=1e-10)
