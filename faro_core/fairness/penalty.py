"""The linearised primal penalty: per-pair smooth terms phi_i and their weighted sum.

With the cell counts of the training split fixed, every cell disparity of DP, EO and CF is linear in one
smooth term per pair, so ``sum_j lambda_j g~_j = sum_i coef_i phi_i + const`` (coefficients:
:meth:`~faro_core.fairness.constraints.ConstraintSet.pair_coefficients`). A term is named by a key
``(kind, temperature)``:

- ``("margin_sigmoid", t)``: phi_i = sigmoid(d_i / (t s)), d_i = r_chosen - r_rejected, s = std(d) of the
  batch (population std, kept in the gradient); DP and EO.
- ``("twin_huber", t)``: phi_i = huber_t(z_c - z_c') + huber_t(z_r - z_r'), z = reward over the batch's
  reward std, ' = the counterfactual twin; CF.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from faro_core.fairness.pairs import PairBatch


def margin_scale(d: Tensor) -> Tensor:
    """Scale of the proxies: the batch's standard deviation of reward margins (in the gradient: a detached
    scale let the model satisfy the proxies by shrinking every margin). Scalar."""
    return d.std(unbiased=False) + 1e-6 if d.numel() > 1 else d.new_ones(())


class _CoefSigmoidDot(torch.autograd.Function):
    """``scale * coef . sigmoid(d / (t s)) - shift`` with s = std(d) + 1e-6 (population std, in the gradient):
    the ``margin_sigmoid`` pair term dotted with its coefficients, with the backward written out. Same value
    and gradient as ``scale * torch.dot(coef, pair_term(("margin_sigmoid", t), batch)) - shift`` (tested), in
    one autograd node with Python-float scalars (fewer dispatches on a CPU head step)."""

    @staticmethod
    def forward(ctx: Any, d: Tensor, coef: Tensor, t: float, scale: float, shift: float) -> Tensor:
        n = d.numel()
        if n > 1:
            sp_t, mu_t = torch.std_mean(d, unbiased=False)
            sp, mu = float(sp_t), float(mu_t)
            s = sp + 1e-6
        else:
            sp, mu, s = 1.0, 0.0, 1.0
        sig = torch.sigmoid(d * (1.0 / (s * t)))
        ctx.save_for_backward(d, coef, sig)
        ctx.k = (t, n, sp, mu, s, scale)
        return torch.dot(coef, sig).mul_(scale).sub_(shift)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        d, coef, sig = ctx.saved_tensors
        t, n, sp, mu, s, scale = ctx.k
        a = coef * sig * (1.0 - sig)  # coef_i * sigmoid'(u_i)
        g = a * (scale / (t * s))
        if n > 1 and sp > 0:  # through the scale: ds/dd_j = (d_j - mean) / (n * std)
            k = float(torch.dot(a, d)) * scale / (t * s * s * n * sp)
            g = g.sub_(d - mu, alpha=k)
        return grad * g, None, None, None, None


def coef_dot_pair_term(key: tuple[str, float], coef: Tensor, batch: PairBatch, scale: float = 1.0,
                       shift: float = 0.0) -> Tensor:
    """``scale * sum_i coef_i phi_i - shift`` for the pair term ``key`` on ``batch`` (scalar, differentiable in
    the rewards)."""
    if key[0] == "margin_sigmoid" and not coef.is_cuda:
        # the fused node reads two scalars back to the host: free on a CPU, a stream synchronization on a GPU
        # (where the same value and gradient come from plain autograd ops without one)
        return _CoefSigmoidDot.apply(batch.r_chosen - batch.r_rejected, coef, float(key[1]), float(scale),
                                     float(shift))
    return torch.dot(coef, pair_term(key, batch)) * scale - shift


def pair_term(key: tuple[str, float], batch: PairBatch) -> Tensor:
    """The per-pair smooth term phi [B] named by ``key`` (see :meth:`Constraint.term_key`)."""
    kind, t = key
    d = batch.r_chosen - batch.r_rejected
    if kind == "margin_sigmoid":
        return torch.sigmoid(d / (margin_scale(d) * t))
    if kind == "twin_huber":
        scale = torch.cat([batch.r_chosen, batch.r_rejected]).std(unbiased=False) + 1e-6
        m = ~torch.isnan(batch.cf_r_chosen) & ~torch.isnan(batch.cf_r_rejected)
        zero = torch.zeros_like(d)
        dc = torch.where(m, batch.r_chosen - torch.nan_to_num(batch.cf_r_chosen), zero) / scale
        dr = torch.where(m, batch.r_rejected - torch.nan_to_num(batch.cf_r_rejected), zero) / scale
        return huber(dc, t) + huber(dr, t)
    if kind in ("role_dp", "role_eo"):
        raise ValueError(f"{kind!r} is an item term: ProxyGDA.item_penalty computes it on a batch of whole items")
    raise ValueError(f"unknown pair term {kind!r}")


def huber(x: Tensor, delta: float) -> Tensor:
    """Smooth L1: x^2 / (2 delta) for |x| < delta, else |x| - delta / 2 (element-wise)."""
    ax = x.abs()
    return torch.where(ax < delta, 0.5 * x**2 / delta, ax - 0.5 * delta)
