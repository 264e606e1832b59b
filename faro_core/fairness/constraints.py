"""Fairness constraints on a reward model, in the manner of fairlearn's moments (DESIGN §4).

Every constraint is a small object that turns a :class:`PairBatch` of rewards into *cell statistics*:
for each cell ``c`` (a group within a stratum, and for EO also a label value) a numerator and a count for
the group, and a numerator and a count for its anchor (the whole stratum). The cell's disparity is

    d_c = num_c / cnt_c  -  num_ref_c / cnt_ref_c          (DP, EO: a rate minus the population's rate)
    d_c = num_c / cnt_c                                    (CF: mean |r - r_twin| in standardized units)

and the one-sided constraints are ``d_c <= eps`` and ``-d_c <= eps`` (CF: only the first). Statistics come
in two flavours from the same code: *strict* (indicators, what is reported and drives the dual step) and
*proxy* (sigmoids / smooth-L1, differentiable, what drives the primal step). Because they are sums and
counts, they can be accumulated over batches (running estimates) and all-reduced across processes.

Anchoring each group to its stratum's population gives 2K one-sided constraints per stratum, not the
K(K-1)/2 pairwise ones. A cell with fewer than ``min_count`` members (or anchor members) in the data it is
estimated on is not estimated: its value is 0 and it is reported as too small.
"""

from __future__ import annotations

import torch
from torch import Tensor

from faro_core.fairness.pairs import CellStats, GroupIndex, PairBatch
from faro_core.fairness.penalty import huber, margin_scale
from faro_core.fairness.scatter import scatter_sum

# Cells with fewer members (or anchor members) than this are not estimated: FaroConfig.min_count's default,
# spelled here because this layer sits below the config (tests/test_config.py checks they agree).
DEFAULT_MIN_COUNT = 30


class Constraint:
    """Base class. Subclasses define :meth:`cell_names` and :meth:`cell_stats`."""

    kind: str = ""
    two_sided: bool = True

    def __init__(self, epsilon: float = 0.05, min_count: int = DEFAULT_MIN_COUNT, temperature: float = 0.25) -> None:
        if not (epsilon >= 0):
            raise ValueError(f"epsilon must be >= 0, got {epsilon}")
        self.epsilon = float(epsilon)
        self.min_count = int(min_count)
        self.temperature = float(temperature)
        self.index: GroupIndex | None = None
        self.cell_mask: Tensor | None = None  # cells a trainer may constrain (large enough in training data)
        self.full_counts: tuple[Tensor, Tensor] | None = None  # (cnt, cnt_ref) [C] on the training split

    def bind(self, index: GroupIndex) -> Constraint:
        self.index = index
        return self

    # -- to override -----------------------------------------------------------------------------
    def cell_names(self) -> list[str]:
        raise NotImplementedError

    def cell_stats(self, batch: PairBatch, smooth: bool) -> CellStats:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return len(self.cell_names())

    def names(self) -> list[str]:
        """Names of the one-sided constraints, in the order of :meth:`values`."""
        cells = self.cell_names()
        if not self.two_sided:
            return [f"{self.kind}[{c}]" for c in cells]
        return [f"{self.kind}[{c}]+" for c in cells] + [f"{self.kind}[{c}]-" for c in cells]

    def disparities(self, stats: CellStats, min_count: int | None = None) -> tuple[Tensor, Tensor]:
        """(d [C], estimable [C] bool): each cell's disparity, 0 where the cell is too small.

        ``min_count`` overrides the constraint's own (the trainer passes 1 for batch statistics, having
        fixed once, from the whole training split, which cells are large enough: :attr:`cell_mask`).
        """
        mc = self.min_count if min_count is None else min_count
        ok = (stats.cnt >= mc) & ((stats.cnt_ref >= mc) | (not self.two_sided))
        if self.cell_mask is not None:
            ok = ok & self.cell_mask.to(ok.device)
        rate = stats.num / stats.cnt.clamp_min(1e-12)
        ref = stats.num_ref / stats.cnt_ref.clamp_min(1e-12) if self.two_sided else torch.zeros_like(rate)
        d = torch.where(ok, rate - ref, torch.zeros_like(rate))
        return d, ok

    def values(self, stats: CellStats, min_count: int | None = None) -> Tensor:
        """One-sided constraint values g [m] (constraint: g <= epsilon)."""
        d, _ = self.disparities(stats, min_count)
        return torch.cat([d, -d]) if self.two_sided else d

    def strict(self, batch: PairBatch) -> Tensor:
        """Strict one-sided violations g [m] on ``batch`` (indicators; no gradient)."""
        with torch.no_grad():
            return self.values(self.cell_stats(batch, smooth=False))

    def proxy(self, batch: PairBatch) -> Tensor:
        """Smooth one-sided violations g~ [m] on ``batch`` (differentiable)."""
        return self.values(self.cell_stats(batch, smooth=True))

    # -- the linearized primal penalty ------------------------------------------------------------
    # With cell counts fixed to those of the whole training split, every cell disparity is *linear* in
    # per-pair smooth terms phi_i (a sigmoid of the pair's margin, or the Huber deviation of its twins):
    #     sum_j lambda_j g~_j = sum_i coef_i phi_i + const.
    # So the trainer computes coef [N] once per dual step (O(N), no forward pass) and each primal step is
    # (N / B) * sum_{i in batch} coef_i phi_i: an unbiased estimate on the Bradley-Terry batch itself, a
    # handful of element-wise ops, with no per-cell scatter and no separate constraint batch.
    def term_key(self) -> tuple[str, float]:
        """Which per-pair smooth term phi this constraint is linear in (constraints sharing one are summed)."""
        raise NotImplementedError

    def pair_coefficients(self, pairs: PairBatch, lam: Tensor) -> Tensor:
        """coef [N] on :func:`pair_term` for the pairs (rewards unused) given this constraint's multipliers."""
        raise NotImplementedError

    def _member_shares(self, lam: Tensor, n_anchor: int = 0) -> tuple[Tensor, Tensor]:
        """(per_cell [C], per_anchor [n_anchor]): what one member of a cell, and one member of an anchor,
        adds to sum_j lam_j d_j per unit of its smooth term. Lambda_c = lambda+_c - lambda-_c (one-sided:
        lambda_c), 0 on cells the trainer leaves free; counts are the training split's (:meth:`fix_cells`);
        cell c's anchor is c % n_anchor (the cell order of :meth:`cell_names`)."""
        if self.full_counts is None:
            raise RuntimeError("fix_cells() on the training split first: the penalty uses its cell counts")
        cnt, cnt_ref = self.full_counts
        c = self.n_cells
        lam_c = lam[:c] - lam[c:] if self.two_sided else lam[:c]
        if self.cell_mask is not None:
            lam_c = torch.where(self.cell_mask.to(lam_c.device), lam_c, torch.zeros_like(lam_c))
        per_cell = lam_c / cnt.clamp_min(1.0)
        if not n_anchor:
            return per_cell, per_cell.new_zeros(0)
        anchor = torch.arange(c) % n_anchor
        return per_cell, scatter_sum(lam_c / cnt_ref.clamp_min(1.0), anchor, n_anchor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epsilon={self.epsilon})"

class _AnchoredRate(Constraint):
    """A rate per cell against the rate of its anchor (DP and EO): members are responses (DP) or pairs (EO),
    each with a score whose sign is its strict outcome, a group and an anchor; cell = group * n_anchor +
    anchor. Subclasses say who the members are (:meth:`_members`) and how many groups and anchors there are."""

    def _members(self, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
        """(score [M], group [M], anchor [M]) of the members in ``batch``."""
        raise NotImplementedError

    def _n_groups(self) -> int:
        raise NotImplementedError

    def _n_anchor(self) -> int:
        raise NotImplementedError

    def cell_stats(self, batch: PairBatch, smooth: bool) -> CellStats:
        assert self.index is not None
        n_a = self._n_anchor()
        size = self._n_groups() * n_a
        score, g, a = self._members(batch)
        if smooth:  # scale: all the batch's margins, as in the linearized penalty
            sel = torch.sigmoid(score / (self.temperature * margin_scale(batch.r_chosen - batch.r_rejected)))
        else:
            sel = (score > 0).to(score.dtype)
        cell = g * n_a + a
        ones = torch.ones_like(sel)
        num_a, cnt_a = scatter_sum(sel, a, n_a), scatter_sum(ones, a, n_a)
        anchor_of_cell = torch.arange(size, device=sel.device) % n_a
        return CellStats(scatter_sum(sel, cell, size), scatter_sum(ones, cell, size).detach(),
                         num_a[anchor_of_cell], cnt_a[anchor_of_cell].detach())

    def strict_members(self, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor, int, int]:
        """(outcome [M] in {0, 1}, group [M], anchor [M], n_groups, n_anchor): the members behind
        :meth:`cell_stats`'s strict rates (used by :mod:`faro_core.fairness.chance`)."""
        score, g, a = self._members(batch)
        return (score > 0).to(score.dtype), g, a, self._n_groups(), self._n_anchor()


class DemographicParity(_AnchoredRate):
    """DP of rewards: P(response naming a is selected | A=a, S=s, partner kind) vs the same rate of every
    grouped response in (s, partner kind).

    A response is *selected* when the reward ranks it above the other response of its pair (its
    pair-centered reward (r_self - r_other) / 2 is above 0), which is invariant to per-prompt reward offsets.
    Responses naming no group are left out. Members are responses; cell = (group, stratum, partner kind),
    anchor = (stratum, partner kind), where the partner kind is "vs-none" (the pair partner names no group)
    or "vs-group" (it names one); ``GroupIndex.dp_partner=False`` pools the two kinds (anchor = stratum).
    DP holds only in the strata ``GroupIndex.dp_strata`` lists (None: all; on BBQ-style data the default
    scope is the ambiguous contexts, where any group difference is bias).

    Strict outcome: 1[margin > 0]. Proxy: sigmoid(margin / (T s)), s the batch's standard deviation of
    margins (in the gradient), T = ``temperature``. Why these choices (pair-centered selection, partner
    kinds, the ambiguous-context scope), with the measurements: docs/TRAINING.md.
    """

    kind = "dp"

    def __init__(self, epsilon: float = 0.05, min_count: int = DEFAULT_MIN_COUNT, temperature: float = 0.5) -> None:
        super().__init__(epsilon, min_count, temperature)

    def cell_names(self) -> list[str]:
        assert self.index is not None, "bind() the constraint to a GroupIndex first"
        strata = [self.index.strata[i] for i in self.index.dp_strata_codes()]
        kinds = self.index.dp_partner_kinds()
        if not kinds:
            return [f"{g}|{s}" for g in self.index.response_groups for s in strata]
        return [f"{g}|{s}|{k}" for g in self.index.response_groups for s in strata for k in kinds]

    def _n_anchor(self) -> int:
        """Number of population anchors: DP strata x partner kinds (cell c's anchor is c % this)."""
        assert self.index is not None
        return len(self.index.dp_strata_codes()) * max(1, len(self.index.dp_partner_kinds()))

    def _anchor_of(self, stratum: Tensor, partner_group: Tensor) -> Tensor:
        """[n] anchor code of responses in ``stratum`` whose pair partner has ``partner_group``; -1 out of scope."""
        assert self.index is not None
        pos = self._stratum_map(stratum.device)[stratum]
        if not self.index.dp_partner:
            return pos
        return torch.where(pos >= 0, pos * 2 + (partner_group >= 0).long(), pos)

    def _stratum_map(self, device: torch.device) -> Tensor:
        """[n_strata] position of each stratum among DP's strata, -1 where DP does not apply."""
        assert self.index is not None
        codes = self.index.dp_strata_codes()
        key = (str(device), tuple(codes))
        if getattr(self, "_map_key", None) != key:
            pos = torch.full((len(self.index.strata),), -1, dtype=torch.long)
            pos[torch.tensor(codes, dtype=torch.long)] = torch.arange(len(codes))
            self._map, self._map_key = pos.to(device), key
        return self._map

    def _members(self, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Every in-scope group-naming response: its margin over its pair partner, group and anchor."""
        d = batch.r_chosen - batch.r_rejected
        m = torch.cat([d, -d])
        g = torch.cat([batch.chosen_group, batch.rejected_group])
        a = torch.cat([self._anchor_of(batch.stratum, batch.rejected_group),
                       self._anchor_of(batch.stratum, batch.chosen_group)])
        keep = (g >= 0) & (a >= 0)
        return m[keep], g[keep], a[keep]

    def _n_groups(self) -> int:
        assert self.index is not None
        return len(self.index.response_groups)

    def term_key(self) -> tuple[str, float]:
        return ("margin_sigmoid", self.temperature)

    def pair_coefficients(self, pairs: PairBatch, lam: Tensor) -> Tensor:
        assert self.index is not None
        n_s = self._n_anchor()
        per_cell, per_anchor = self._member_shares(lam, n_s)

        def response_coef(g: Tensor, partner: Tensor) -> Tensor:
            pos = self._anchor_of(pairs.stratum, partner)
            ok = (g >= 0) & (pos >= 0)
            cell = (g.clamp_min(0) * n_s + pos.clamp_min(0))
            return torch.where(ok, per_cell[cell] - per_anchor[pos.clamp_min(0)], torch.zeros(len(g)))

        # the rejected response's selection is sigmoid(-d/..) = 1 - sigmoid(d/..): its coefficient flips sign
        return (response_coef(pairs.chosen_group, pairs.rejected_group)
                - response_coef(pairs.rejected_group, pairs.chosen_group))


class EqualizedOdds(_AnchoredRate):
    """EO of preference prediction: P(yhat=1 | Y=y, A=a, S=s) vs P(yhat=1 | Y=y, S=s), y in {0, 1}.

    yhat = 1[r(y1) > r(y2)] on the pair in its fixed random order; Y = 1 if y1 is truly better.
    Proxy: sigmoid((r1 - r2) / (T * s)), s the batch's standard deviation of reward margins (detached):
    with a fixed T, small rewards would put every proxy rate near 0.5 and hide a large strict gap.
    """

    kind = "eo"

    def __init__(self, epsilon: float = 0.05, min_count: int = DEFAULT_MIN_COUNT, temperature: float = 0.5) -> None:
        super().__init__(epsilon, min_count, temperature)

    def cell_names(self) -> list[str]:
        assert self.index is not None, "bind() the constraint to a GroupIndex first"
        return [f"{g}|{s}|y={y}" for g in self.index.pair_groups for s in self.index.strata for y in (0, 1)]

    def _members(self, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Every pair with a group and a label: its score r(y1) - r(y2), group and anchor stratum * 2 + Y."""
        m = (batch.group >= 0) & ~torch.isnan(batch.label)
        d = (batch.r_chosen - batch.r_rejected)[m]
        flip = batch.order[m].bool()
        y = torch.where(flip, 1.0 - batch.label[m], batch.label[m]).long()
        return torch.where(flip, -d, d), batch.group[m], batch.stratum[m] * 2 + y

    def _n_groups(self) -> int:
        assert self.index is not None
        return len(self.index.pair_groups)

    def _n_anchor(self) -> int:
        assert self.index is not None
        return len(self.index.strata) * 2

    def term_key(self) -> tuple[str, float]:
        return ("margin_sigmoid", self.temperature)

    def pair_coefficients(self, pairs: PairBatch, lam: Tensor) -> Tensor:
        assert self.index is not None
        n_s = len(self.index.strata)
        per_cell, per_ref = self._member_shares(lam, n_s * 2)
        ok = (pairs.group >= 0) & ~torch.isnan(pairs.label)
        flip = pairs.order.bool()
        label = torch.nan_to_num(pairs.label)
        y = torch.where(flip, 1.0 - label, label).long().clamp(0, 1)
        cell = (pairs.group.clamp_min(0) * n_s + pairs.stratum) * 2 + y
        coef = per_cell[cell] - per_ref[pairs.stratum * 2 + y]
        # a flipped pair predicts with sigmoid(-d/..) = 1 - sigmoid(d/..)
        return torch.where(ok, torch.where(flip, -coef, coef), torch.zeros(len(coef)))


class CounterfactualFairness(Constraint):
    """CF: E|z(x, y) - z(x', y')| <= eps per pair group, z = reward in standard units of the batch.

    (x', y') is the counterfactual twin (group terms swapped). Both responses of a pair count.
    Proxy: smooth-L1 (Huber, delta 0.1) in place of the absolute value. The last cell, ``all``, is the
    population mean. One-sided (an absolute difference cannot be too small).
    """

    kind = "cf"
    two_sided = False

    def __init__(self, epsilon: float = 0.05, min_count: int = DEFAULT_MIN_COUNT, temperature: float = 0.1) -> None:
        super().__init__(epsilon, min_count, temperature)

    def cell_names(self) -> list[str]:
        assert self.index is not None, "bind() the constraint to a GroupIndex first"
        return [*self.index.pair_groups, "all"]

    def cell_stats(self, batch: PairBatch, smooth: bool) -> CellStats:
        assert self.index is not None
        k = len(self.index.pair_groups)
        scale = torch.cat([batch.r_chosen, batch.r_rejected]).std(unbiased=False) + 1e-6
        m = ~torch.isnan(batch.cf_r_chosen) & ~torch.isnan(batch.cf_r_rejected)
        diff = torch.cat([(batch.r_chosen - batch.cf_r_chosen)[m], (batch.r_rejected - batch.cf_r_rejected)[m]])
        diff = diff / scale
        if smooth:
            dev = huber(diff, self.temperature)
        else:
            dev = diff.abs()
        a = torch.cat([batch.group[m], batch.group[m]])
        cell = torch.where(a >= 0, a, torch.full_like(a, k))
        ones = torch.ones_like(dev)
        num = scatter_sum(dev, cell, k + 1)
        cnt = scatter_sum(ones, cell, k + 1)
        num = torch.cat([num[:k], dev.sum().reshape(1)])
        cnt = torch.cat([cnt[:k], torch.tensor([float(dev.numel())], dtype=dev.dtype, device=dev.device)])
        zero = torch.zeros_like(num)
        return CellStats(num, cnt.detach(), zero, zero)

    def term_key(self) -> tuple[str, float]:
        return ("twin_huber", self.temperature)

    def pair_coefficients(self, pairs: PairBatch, lam: Tensor) -> Tensor:
        assert self.index is not None
        per_cell, _ = self._member_shares(lam)
        k = len(self.index.pair_groups)
        g = pairs.group
        coef = torch.where(g >= 0, per_cell[g.clamp(0, max(k - 1, 0))] if k else torch.zeros(len(g)),
                           torch.zeros(len(g))) + per_cell[k]
        has_twin = ~torch.isnan(pairs.cf_r_chosen) & ~torch.isnan(pairs.cf_r_rejected)
        return torch.where(has_twin, coef, torch.zeros(len(g)))


def cf_flip_rate(batch: PairBatch) -> float:
    """Share of twin pairs whose ranking (chosen vs rejected) flips under the group swap."""
    m = ~torch.isnan(batch.cf_r_chosen) & ~torch.isnan(batch.cf_r_rejected)
    if not bool(m.any()):
        return float("nan")
    a = (batch.r_chosen - batch.r_rejected)[m] > 0
    b = (batch.cf_r_chosen - batch.cf_r_rejected)[m] > 0
    return float((a != b).float().mean())
