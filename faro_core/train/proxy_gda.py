"""Proxy-Lagrangian gradient descent-ascent (DESIGN §5; Cotter, Jiang & Sridharan 2019).

    L(theta, lambda) = L_BT(theta) + sum_j lambda_j (g~_j(theta) - eps_j),   lambda >= 0

The primal player descends on the *smooth proxies* g~. With the cell counts of the training split fixed,
sum_j lambda_j g~_j is linear in one smooth term per pair (constraints.py), so after each dual step the
multipliers are folded into per-pair coefficients and a primal step adds ``(N/B) sum_i coef_i phi_i`` on the
Bradley-Terry batch itself: an unbiased estimate of the population penalty at O(batch) cost.
The dual player ascends, ``lambda_j <- min(lambda_max, max(0, lambda_j + eta (g_j - eps_j)))``, every
``dual_every`` steps on per-cell statistics of the whole training split, read from a buffer holding each
pair's rewards from the last step that saw it (no extra forward pass), all-reduced across processes, so
every process takes the same step.
Which g the dual player sees is ``dual_signal``: the design's strict violations, the smooth ones, or (default)
smooth for DP/EO and strict for CF -- docs/TRAINING.md has the measurements behind that choice. Strict
violations are always what is logged, reported, used to select the iterate and certified.

Why not ``cooper-optim``: cooper's ``ConstrainedMinimizationProblem`` fits the primal/dual split and names
the two quantities (``violation`` / ``strict_violation``) as we do, but its multipliers are updated from the
violation of the current batch only. Faro's dual step needs violations pooled over the training split or
running per-cell sums (hundreds of small group x stratum cells), all-reduced across processes, and a
bit-for-bit identical path to plain Bradley-Terry when no constraint is active; both are simpler and cheaper
as the lines below than as cooper subclasses. The vocabulary follows cooper's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from faro_core.fairness.constraint_set import ConstraintSet
from faro_core.fairness.pairs import CellStats, PairBatch
from faro_core.fairness.penalty import coef_dot_pair_term
from faro_core.fairness.role_constraint import ITEM_TERMS, item_term
from faro_core.train.config import default_of


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

    def __init__(self, constraints: ConstraintSet, dual_lr: float = default_of("dual_lr"),
                 ema: float = default_of("ema"), fixed_lambda: float | None = None, reduce=None,
                 dual_signal: str = default_of("dual_signal"),
                 lambda_max: float | None = default_of("lambda_max")) -> None:
        self.constraints = constraints
        self.dual_lr, self.ema = float(dual_lr), float(ema)
        self.fixed = fixed_lambda
        self.reduce = reduce or (lambda t: t)
        self.dual_signal = dual_signal
        self.lambda_max = lambda_max
        m = len(constraints)
        self.eps = constraints.epsilons()
        self.lam = torch.full((m,), float(fixed_lambda) if fixed_lambda is not None else 0.0)
        self.running: dict[str, list[CellStats]] | None = None
        self.running_before: dict[str, list[CellStats]] | None = None  # what the last dual step started from
        self.last_strict = torch.zeros(m)
        self.last_signal = torch.zeros(m)  # the violations the last dual step ascended on (see dual_step)
        self.pairs: PairBatch | None = None
        self.n_train = 0
        self.coef: dict[tuple[str, float], Tensor] = {}
        self._const = 0.0
        self._dev: dict[torch.device, list[tuple[tuple[str, float], Tensor]]] = {}  # coef on each device

    def set_pairs(self, pairs: PairBatch, n_train: int) -> None:
        """Attributes of every pair (global index; rewards unused) and the training-split size N: enables
        the linearized penalty. The constraints must have had ``fix_cells`` on the training split."""
        self.pairs, self.n_train = pairs, int(n_train)
        self.refresh()

    def refresh(self) -> None:
        """Fold the current multipliers into per-pair coefficients (after every change of lambda)."""
        if self.pairs is not None and self.constraints and self.fixed is None:
            self.coef = self.constraints.pair_coefficients(self.pairs, self.lam)
            self._const = float((self.lam * self.eps).sum())
            self._dev = {}

    def penalty(self, batch: PairBatch, idx: Tensor | None = None) -> Tensor:
        """sum_j lambda_j (g~_j - eps_j), differentiable in the rewards of the batch.

        With ``idx`` (the batch's global pair indices) and :meth:`set_pairs` done: the linearized, unbiased
        estimate ``(N/B) sum_i coef_i phi_i - sum_j lambda_j eps_j``. Otherwise (and for the fixed-penalty
        hinge, which is not linear): the proxies estimated on the batch with the batch's own cell counts.
        """
        if not self.constraints:
            return batch.r_chosen.new_zeros(())
        if idx is not None and self.coef and self.fixed is None:
            device = batch.r_chosen.device
            terms = self._dev.get(device)
            if terms is None:  # coefficients move to the rewards' device once per dual step
                terms = self._dev[device] = [(k, v.to(device)) for k, v in self.coef.items()]
            factor = self.n_train / max(len(idx), 1)
            total = None
            pair_terms = [(k, v) for k, v in terms if k[0] not in ITEM_TERMS]  # item terms: item_penalty
            for i, (key, coef) in enumerate(pair_terms):  # the constant rides on the first term (no extra op)
                v = coef_dot_pair_term(key, coef[idx], batch, factor, self._const if i == 0 else 0.0)
                total = v if total is None else total + v
            return total if total is not None else batch.r_chosen.new_zeros(()) - self._const
        g_tilde = self.constraints.proxy(batch, min_count=1)
        lam = self.lam.to(g_tilde.device, g_tilde.dtype)
        excess = g_tilde - self.eps.to(g_tilde.device, g_tilde.dtype)
        if self.fixed is not None:
            # Fixed-penalty baseline: a hinge. With one lambda on both sides of a two-sided cell the linear
            # terms lambda (d - eps) + lambda (-d - eps) cancel and the "penalty" would be a constant.
            excess = excess.clamp_min(0.0)
        return (lam * excess).sum()

    def item_penalty(self, batch: PairBatch, idx: Tensor, factor: float) -> Tensor:
        """The linearized penalty's item terms (the role constraints, :mod:`faro_core.fairness.role`) on a batch
        of whole items: ``factor * sum_i coef_i phi_i`` with phi_i the smooth term of pair i's item, i.e.
        ``factor * sum_k coef_k psi_k``; ``idx`` [B] are the pairs' global indices and ``factor`` the sampling
        scale that makes it an unbiased estimate of the population term (``faro train``'s Bradley-Terry batches
        by whole items: batches per epoch x processes, :class:`~faro_core.train.role_batches.ItemBatches`;
        ``FairRewardTrainer``'s separate item draw: items in the pool / items drawn). The fixed-penalty hinge
        (not linear) uses the batch's own cell rates instead."""
        zero = batch.r_chosen.new_zeros(())
        role = [(c, sl) for c, sl in zip(self.constraints.constraints, self._slices())
                if c.term_key()[0] in ITEM_TERMS]
        if not role:
            return zero
        if self.fixed is not None:
            total = zero
            for c, sl in role:
                excess = (c.proxy(batch) - self.eps[sl].to(zero.device)).clamp_min(0.0)
                total = total + (self.lam[sl].to(zero.device) * excess).sum()
            return total
        total = zero
        for c, _ in role:
            coef = self.coef.get(c.term_key())
            if coef is not None:
                phi = item_term(c.term_key(), batch, c)
                total = total + factor * torch.dot(coef[idx.cpu()].to(phi.device, phi.dtype), phi)
        return total

    def _slices(self) -> list[slice]:
        out, pos = [], 0
        for c in self.constraints.constraints:
            out.append(slice(pos, pos + len(c.names())))
            pos += len(c.names())
        return out

    def shares_statistics_with(self, like: ProxyGDA) -> bool:
        """Would :meth:`dual_step` take ``like``'s statistics (same constraints up to epsilon, same running
        statistics object as ``like`` started its last dual step from, same momentum and signal)?"""
        return (like.running_before is self.running and like.ema == self.ema and like.dual_signal == self.dual_signal
                and like.constraints.names() == self.constraints.names())

    @torch.no_grad()
    def dual_step(self, batch: PairBatch | None, like: ProxyGDA | None = None) -> Tensor:
        """Take the dual ascent step from the batch's statistics. Returns the strict violations g [m].

        ``like``: a player that has just taken this step on the same batch, from the same running statistics
        (the object this player holds: members of one batched slot share them, :mod:`faro_core.train.batched`),
        with the same constraints up to their epsilons. Its statistics are this player's too, bit for bit, so
        they are taken instead of computed again (``batch`` is then unused); only the multipliers step apart.
        Without that shared start the statistics are computed.

        ``dual_signal="strict"`` (Cotter et al.'s proxy-Lagrangian) ascends on strict statistics for every
        constraint; ``"proxy"`` on the smooth ones, the same quantities the primal player descends on (a plain
        Lagrangian game); ``"auto"`` (default) uses the smooth ones for DP and EO, whose strict versions are
        step functions of the margins (the strict game cycled there: cells flipped between their + and -
        sides), and the strict one for CF, whose strict value is continuous and whose smooth-L1 proxy sits
        below it. Either way the strict violations are returned, logged and reported.
        """
        if not self.constraints:
            return self.last_strict
        before = self.running
        if like is not None and self.shares_statistics_with(like):
            # the running statistics are replaced, never changed in place, so sharing them is safe
            self.running, self.last_strict, self.last_signal = like.running, like.last_strict, like.last_signal
        else:
            like = None
            if batch is None:
                raise ValueError("dual_step needs a batch unless `like` stepped from this player's statistics")
            running = dict(before or {})
            values = {}
            for sig in ("strict", "proxy"):
                stats = [s.detach() for s in self.constraints.cell_stats(batch, smooth=sig == "proxy")]
                stats = [CellStats.from_stacked(self.reduce(s.stacked().float()).cpu()) for s in stats]
                if sig in running:
                    stats = [r.scaled(self.ema) + s for r, s in zip(running[sig], stats)]
                running[sig] = stats
                values[sig] = self.constraints.values(stats, min_count=1).float()
            self.running = running
            self.last_strict = values["strict"]
            if self.dual_signal == "auto":
                cf = torch.tensor([k == "cf" for k in self.constraints.kinds()])
                self.last_signal = torch.where(cf, values["strict"], values["proxy"])
            else:
                self.last_signal = values[self.dual_signal]
        self.running_before = before
        if self.fixed is None:
            self.lam = (self.lam + self.dual_lr * (self.last_signal - self.eps)).clamp(0.0, self.lambda_max)
            if like is not None and like.fixed is None and like.pairs is self.pairs and torch.equal(like.lam, self.lam):
                self.coef, self._dev = like.coef, {}  # equal multipliers on the same pairs: equal coefficients
                self._const = float((self.lam * self.eps).sum())
            else:
                self.refresh()
        return self.last_strict

    # -- checkpointing -----------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, Tensor]:
        out = {"lam": self.lam.clone(), "last_strict": self.last_strict.clone()}
        for sig, stats in (self.running or {}).items():
            for i, s in enumerate(stats):
                out[f"running.{sig}.{i}"] = s.stacked().clone()
        return out

    def load_state_tensors(self, t: dict[str, Tensor]) -> None:
        self.lam = t["lam"].clone()
        self.last_strict = t["last_strict"].clone()
        running: dict[str, list[CellStats]] = {}
        for sig in ("strict", "proxy"):
            keys = sorted((k for k in t if k.startswith(f"running.{sig}.")), key=lambda k: int(k.split(".")[2]))
            if keys:
                running[sig] = [CellStats.from_stacked(t[k].clone()) for k in keys]
        self.running = running or None
        self.refresh()
