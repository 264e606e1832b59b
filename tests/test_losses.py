"""Baseline losses (faro_core/train/losses.py): group DRO's exponentiated-gradient weights and the alpha-fair
regulariser, worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from faro_core.errors import FaroError
from faro_core.train.losses import AlphaFairLoss, GroupDROLoss, alpha_fair_utility, bt_pair_losses


def test_alpha_fair_utility_special_cases() -> None:
    x = torch.tensor([0.2, 0.5, 0.9])
    assert float(alpha_fair_utility(x, 1.0)) == pytest.approx(float(torch.log(x).mean()))
    assert float(alpha_fair_utility(x, 0.0)) == pytest.approx(float(x.mean() - 1))  # utilitarian
    assert float(alpha_fair_utility(x, 2.0)) == pytest.approx(float((1 - 1 / x).mean()))
    with pytest.raises(FaroError):
        alpha_fair_utility(x, -1.0)


def test_alpha_fair_gradient_reweights_poorly_ranked_pairs() -> None:
    """d loss / d m_i = -(1 - x_i)(1 + lambda x_i^(1 - alpha)) / B: BT's gradient, multiplied by a weight that
    is largest for the pair ranked worst; at alpha = 1 the loss is (1 + lambda) times BT."""
    m = torch.tensor([-1.0, 0.2, 2.5], requires_grad=True)
    loss = AlphaFairLoss(alpha=2.0, weight=0.5)(m, torch.zeros(3))
    loss.backward()
    x = torch.sigmoid(m.detach())
    expected = -(1 - x) * (1 + 0.5 * x.pow(-1.0)) / 3
    assert torch.allclose(m.grad, expected, atol=1e-6)
    weight = expected / (-(1 - x) / 3)
    assert int(torch.argmax(weight)) == 0  # the pair with the smallest margin
    r = torch.tensor([0.3, -0.4, 1.0])
    assert float(AlphaFairLoss(alpha=1.0, weight=0.5)(r, torch.zeros(3))) == pytest.approx(
        1.5 * float(bt_pair_losses(r, torch.zeros(3)).mean()), rel=1e-6)


def test_group_dro_weights_follow_exponentiated_gradient_by_hand() -> None:
    """Two groups, batch losses L_0, L_1: q <- q exp(eta L) / sum, then the loss is sum q L / sum q."""
    groups = torch.tensor([0, 0, 1, 1])
    dro = GroupDROLoss(groups, 2, eta=0.5)
    r_c = torch.tensor([2.0, 1.0, 0.0, -1.0])
    loss = dro(r_c, torch.zeros(4), torch.arange(4))
    per = bt_pair_losses(r_c, torch.zeros(4))
    big_l = torch.stack([per[:2].mean(), per[2:].mean()]).double()
    q = torch.softmax(torch.log(torch.tensor([0.5, 0.5], dtype=torch.double)) + 0.5 * big_l, dim=0)
    assert torch.allclose(dro.q, q)
    assert float(loss) == pytest.approx(float((q * big_l).sum()), rel=1e-6)
    # a batch with group 1 only leaves group 0's weight where it was, relative to the update of group 1
    dro2 = GroupDROLoss(groups, 2, eta=0.5)
    dro2(r_c[2:], torch.zeros(2), torch.tensor([2, 3]))
    expect = torch.softmax(torch.log(torch.tensor([0.5, 0.5], dtype=torch.double))
                           + torch.tensor([0.0, 0.5 * float(big_l[1])], dtype=torch.double), dim=0)
    assert torch.allclose(dro2.q, expect)


def test_group_dro_weight_moves_to_the_worst_group_and_survives_a_checkpoint() -> None:
    groups = torch.tensor([0] * 50 + [1] * 50 + [2] * 50)
    dro = GroupDROLoss(groups, 3, eta=0.2, names=["men", "women", "(none)"])
    r_c = torch.cat([torch.full((50,), 2.0), torch.full((50,), -0.5), torch.full((50,), 1.0)])  # women worst
    for _ in range(30):
        dro(r_c, torch.zeros(150), torch.arange(150))
    w = dro.weights()
    assert max(w, key=w.get) == "women" and w["women"] > 0.9 and math.isclose(sum(w.values()), 1.0)
    other = GroupDROLoss(groups, 3, eta=0.2)
    other.load_state(dro.state())
    assert torch.equal(other.q, dro.q)
    with pytest.raises(FaroError):
        GroupDROLoss(groups, 3, eta=0.0)
