"""Training losses of two baselines from the literature that change the Bradley-Terry objective itself.

Both take a batch's rewards r(chosen), r(rejected) [B] and return a scalar loss to minimise; m = r(chosen) -
r(rejected) is a pair's preference margin and l(m) = -log sigma(m) its Bradley-Terry loss.

- :class:`GroupDROLoss` (group-robust reward learning: Sagawa et al. 2020, group DRO; Ramesh et al. 2024,
  group-robust preference optimisation). Minimise the worst group's expected loss, max_g E[l | g], through
  the equivalent min over the model, max over q in the simplex of sum_g q_g L_g. Online mirror ascent on q
  (exponentiated gradient): after each batch, with L_g the batch's mean loss of group g (groups absent from
  the batch keep their weight),

      q_g <- q_g exp(eta L_g) / sum_h q_h exp(eta L_h),

  and the model takes a gradient step on sum_g q_g L_g / sum_g q_g over the groups in the batch, with q
  held fixed (the division keeps the loss on BT's scale when a batch misses some groups; with every group
  present it is Sagawa et al.'s objective). A group whose loss stays highest
  gains weight geometrically; with equal losses q stays where it is. q starts uniform over the groups of
  the training split.

- :class:`AlphaFairLoss` (a fairness regulariser with no group labels, after "Towards Reward Fairness in
  RLHF", Ouyang et al., ACL 2025, which treats rewards as resources allocated to samples). The resource of
  pair i is x_i = sigma(m_i) in (0, 1), its probability of being ranked right. The alpha-fair utility of
  an allocation (Mo & Walrand 2000) is

      U_alpha(x) = (1/B) sum_i (x_i^(1 - alpha) - 1) / (1 - alpha)   (alpha != 1),  (1/B) sum_i log x_i  (alpha = 1),

  concave and increasing; alpha = 0 is the plain mean (utilitarian), alpha -> infinity max-min fairness.
  The loss is l_BT - lambda U_alpha(x). At alpha = 1 the utility is -l_BT, so the regulariser only rescales BT;
  for alpha > 1 its gradient with respect to m_i is -lambda x_i^(1 - alpha) (1 - x_i) / B, i.e. BT's
  per-pair gradient (1 - x_i) / B reweighted by 1 + lambda x_i^(1 - alpha): pairs the model ranks poorly
  (small x_i) are pushed hardest, which narrows the spread of margins across pairs, whatever group they
  come from. x is clamped to [1e-6, 1] so that x^(1 - alpha) stays finite.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from faro_core.errors import FaroError


def bt_pair_losses(r_chosen: Tensor, r_rejected: Tensor) -> Tensor:
    """Per-pair Bradley-Terry losses -log sigma(r+ - r-) [B]."""
    return -F.logsigmoid(r_chosen - r_rejected)


def alpha_fair_utility(x: Tensor, alpha: float) -> Tensor:
    """U_alpha(x) = mean_i (x_i^(1 - alpha) - 1) / (1 - alpha), or mean_i log x_i at alpha = 1 (x > 0)."""
    if alpha < 0:
        raise FaroError(f"fair_alpha must be >= 0, got {alpha}")
    if abs(alpha - 1.0) < 1e-12:
        return torch.log(x).mean()
    return ((x.pow(1.0 - alpha) - 1.0) / (1.0 - alpha)).mean()


class AlphaFairLoss:
    """l_BT - weight * U_alpha(sigma(m)) on a batch (see the module docstring). Stateless."""

    def __init__(self, alpha: float = 2.0, weight: float = 1.0) -> None:
        if alpha < 0 or weight < 0:
            raise FaroError(f"fair_alpha and fair_weight must be >= 0, got {alpha} and {weight}")
        self.alpha, self.weight = float(alpha), float(weight)

    def __call__(self, r_chosen: Tensor, r_rejected: Tensor, idx: Tensor | None = None) -> Tensor:
        m = r_chosen - r_rejected
        x = torch.sigmoid(m).clamp(1e-6, 1.0)
        return bt_pair_losses(r_chosen, r_rejected).mean() - self.weight * alpha_fair_utility(x, self.alpha)

    def state(self) -> dict[str, Tensor]:
        return {}

    def load_state(self, state: dict[str, Tensor]) -> None:
        return None


class GroupDROLoss:
    """Group DRO on the Bradley-Terry loss with exponentiated-gradient group weights (module docstring).

    ``groups`` [N]: a group code per pair of the whole frame (0 .. G-1; every pair has one, pairs without a
    named group form their own), indexed by the batch's pair indices ``idx``. ``q`` [G] (:attr:`q`) is the
    current weight vector; :meth:`state` / :meth:`load_state` carry it through a checkpoint."""

    def __init__(self, groups: Tensor, n_groups: int, eta: float = 0.05, names: list[str] | None = None,
                 present: Tensor | None = None, reduce: Callable[[Tensor], Tensor] | None = None) -> None:
        if eta <= 0 or not math.isfinite(eta):
            raise FaroError(f"dro_eta must be > 0, got {eta}")
        if n_groups < 1:
            raise FaroError("group DRO needs at least one group")
        self.groups, self.n_groups, self.eta = groups.long(), int(n_groups), float(eta)
        self.names = names or [str(g) for g in range(n_groups)]
        mask = torch.ones(n_groups, dtype=torch.bool) if present is None else present.bool()
        self.q = mask.double() / mask.sum()  # uniform over the groups of the training split
        self.reduce = reduce  # under DDP: sums the processes' per-group loss totals and counts for the q step

    def __call__(self, r_chosen: Tensor, r_rejected: Tensor, idx: Tensor) -> Tensor:
        losses = bt_pair_losses(r_chosen, r_rejected)
        g = self.groups[idx.cpu()].to(losses.device)
        total = torch.zeros(self.n_groups, device=losses.device, dtype=losses.dtype).index_add(0, g, losses)
        count = torch.zeros(self.n_groups, device=losses.device, dtype=losses.dtype).index_add(
            0, g, torch.ones_like(losses))
        here = count > 0
        mean = torch.where(here, total / count.clamp_min(1.0), torch.zeros_like(total))  # L_g of the batch
        with torch.no_grad():  # mirror ascent on q, then a descent step on sum_g q_g L_g with q fixed
            both = torch.stack([total.detach(), count])
            if self.reduce is not None:  # every process takes the same step on the global batch's L_g
                both = self.reduce(both)  # on the losses' device (NCCL needs it there)
            tot, cnt = both[0].double().cpu(), both[1].double().cpu()
            step = torch.where(cnt > 0, self.eta * tot / cnt.clamp_min(1.0), torch.zeros(self.n_groups,
                                                                                        dtype=torch.double))
            logq = torch.log(self.q.clamp_min(1e-300)) + step
            self.q = torch.softmax(logq, dim=0)
        q = self.q.to(device=losses.device, dtype=losses.dtype)
        return (q * mean).sum() / q[here].sum().clamp_min(1e-12)

    def state(self) -> dict[str, Tensor]:
        return {"dro_q": self.q.clone()}

    def load_state(self, state: dict[str, Tensor]) -> None:
        if "dro_q" in state:
            self.q = state["dro_q"].double().clone()

    def weights(self) -> dict[str, float]:
        """The current group weights by group name."""
        return {n: float(v) for n, v in zip(self.names, self.q.tolist())}
