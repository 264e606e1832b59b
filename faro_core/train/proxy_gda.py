"""Proxy-Lagrangian gradient descent-ascent (DESIGN §5; Cotter, Jiang & Sridharan 2019).

    L(theta, lambda) = L_BT(theta) + sum_j lambda_j (g~_j(theta) - eps_j),   lambda >= 0

The primal player descends on the *smooth proxies* g~; the dual player ascends on the *strict* violations g:
``lambda_j <- max(0, lambda_j + eta (g_j - eps_j))``. The strict statistics behind g are running estimates
(exponential moving sums of the per-cell numerators and counts), so small groups are not noise, and
under multi-process training they are all-reduced before the dual step, so every process takes the same
dual step.

Why not ``cooper-optim``: cooper's ``ConstrainedMinimizationProblem`` fits the primal/dual split and names
the two quantities (``violation`` / ``strict_violation``) as we do, but its multipliers are updated from the
violation of the current batch only. Faro's dual step needs violations estimated from running per-cell
sums and counts (hundreds of small group x stratum cells) all-reduced across processes, and a
bit-for-bit identical path to plain Bradley-Terry when no constraint is active; both are simpler and
cheaper as the thirty lines below than as cooper subclasses. The vocabulary follows cooper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from faro_core.constraints import CellStats, ConstraintSet, PairBatch


def bt_loss(r_chosen: Tensor, r_rejected: Tensor, weight: Tensor | None = None) -> Tensor:
    """Bradley-Terry negative log-likelihood, -E log sigmoid(r+ - r-). Inputs [B]; scalar output."""
    nll = -F.logsigmoid(r_chosen - r_rejected)
    if weight is None:
        return nll.mean()
    weight = weight.to(nll.device)
    return (nll * weight).sum() / weight.sum()


class ProxyGDA:
    """Multipliers and running strict statistics of one :class:`ConstraintSet`.

    Parameters
    ----------
    constraints : what to enforce (may be empty: then :meth:`penalty` is exactly 0 and nothing is updated).
    dual_lr : eta_lambda, the dual step size.
    ema : momentum of the running sums behind the strict violations (0: the current batch only).
    fixed_lambda : if given, multipliers are held at this value (the fixed-penalty baseline).
    reduce : callable that sums a tensor across processes (identity in one process).
    """

    def __init__(self, constraints: ConstraintSet, dual_lr: float = 0.02, ema: float = 0.5,
                 fixed_lambda: float | None = None, reduce=None, dual_signal: str = "strict") -> None:
        self.constraints = constraints
        self.dual_lr, self.ema = float(dual_lr), float(ema)
        self.fixed = fixed_lambda
        self.reduce = reduce or (lambda t: t)
        self.dual_signal = dual_signal
        m = len(constraints)
        self.eps = constraints.epsilons()
        self.lam = torch.full((m,), float(fixed_lambda) if fixed_lambda is not None else 0.0)
        self.running: list[CellStats] | None = None
        self.last_strict = torch.zeros(m)

    def penalty(self, batch: PairBatch) -> Tensor:
        """sum_j lambda_j (g~_j - eps_j) on the batch; differentiable in the rewards."""
        if not self.constraints:
            return batch.r_chosen.new_zeros(())
        g_tilde = self.constraints.proxy(batch, min_count=1)
        lam = self.lam.to(g_tilde.device, g_tilde.dtype)
        return (lam * (g_tilde - self.eps.to(g_tilde.device, g_tilde.dtype))).sum()

    @torch.no_grad()
    def dual_step(self, batch: PairBatch) -> Tensor:
        """Update running strict statistics with the batch and take the dual ascent step. Returns g [m]."""
        if not self.constraints:
            return self.last_strict
        stats = self.constraints.cell_stats(batch, smooth=self.dual_signal == "proxy")
        stats = [s.detach() for s in stats]
        stats = [CellStats.from_stacked(self.reduce(s.stacked().float()).cpu()) for s in stats]
        if self.running is None:
            self.running = stats
        else:
            self.running = [r.scaled(self.ema) + s for r, s in zip(self.running, stats)]
        g = self.constraints.values(self.running, min_count=1).float()
        self.last_strict = g
        if self.fixed is None:
            self.lam = (self.lam + self.dual_lr * (g - self.eps)).clamp_min(0.0)
        return g

    # -- checkpointing -----------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        out = {"lam": self.lam.clone(), "last_strict": self.last_strict.clone()}
        for i, s in enumerate(self.running or []):
            out[f"running.{i}"] = s.stacked().clone()
        return out

    def load_state_tensors(self, t: dict[str, Tensor]) -> None:
        self.lam = t["lam"].clone()
        self.last_strict = t["last_strict"].clone()
        keys = sorted((k for k in t if k.startswith("running.")), key=lambda k: int(k.split(".")[1]))
        self.running = [CellStats.from_stacked(t[k].clone()) for k in keys] or None
