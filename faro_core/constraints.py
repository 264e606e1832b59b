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

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

KINDS = ("dp", "eo", "cf")


@dataclass
class GroupIndex:
    """Integer codes for groups and strata, fixed per run (from the training data)."""

    response_groups: list[str]  # groups that responses name (DP)
    pair_groups: list[str]  # pair-level sensitive attribute values (EO, CF)
    strata: list[str] = field(default_factory=lambda: ["all"])  # conditioning cells (DP, EO)
    dp_strata: list[str] | None = None  # strata where DP applies (None: all); see DemographicParity
    dp_partner: bool = True  # DP compares responses against the same kind of partner (see DemographicParity)
    attribute: str = "group"  # DP/EO's sensitive attribute: the named group, or the stereotype role (fairness.role)

    def to_dict(self) -> dict[str, list[str] | bool | str | None]:
        out = {"response_groups": self.response_groups, "pair_groups": self.pair_groups, "strata": self.strata,
               "dp_strata": self.dp_strata, "dp_partner": self.dp_partner}
        return {**out, "attribute": self.attribute} if self.attribute != "group" else out

    def dp_partner_kinds(self) -> list[str]:
        """DP's partner conditions: ``["vs-none", "vs-group"]`` (partner names no group / names one), or
        ``[]`` when DP pools them (``dp_partner=False``, the definition before 2026-11-27)."""
        return ["vs-none", "vs-group"] if self.dp_partner else []

    def dp_strata_codes(self) -> list[int]:
        """Codes (into :attr:`strata`) of the strata DP applies to, in order."""
        if self.dp_strata is None:
            return list(range(len(self.strata)))
        scope = set(self.dp_strata)
        return [i for i, s in enumerate(self.strata) if s in scope]


@dataclass
class PairBatch:
    """Rewards and attributes of B preference pairs. All tensors have shape [B].

    ``chosen_group``/``rejected_group``/``group`` are codes into :class:`GroupIndex` (-1: names no group).
    ``label`` is 1.0 when the chosen response is truly better (gold, or the observed label if no gold),
    0.0 when the rejected one is, NaN when unknown (such pairs are left out of EO).
    ``order`` is a fixed random bit per pair: EO looks at the pair as (y1, y2) = (chosen, rejected) if 0,
    else (rejected, chosen). ``cf_r_*`` are rewards of the counterfactual twins (NaN: no twin).
    With ``--attribute role`` the batch also carries ``role_item`` (code of the pair's item, -1: no role item)
    and ``chosen_role`` / ``rejected_role`` (0 biased, 1 counter, 2 neither; :mod:`faro_core.fairness.role`).
    """

    r_chosen: Tensor
    r_rejected: Tensor
    chosen_group: Tensor
    rejected_group: Tensor
    group: Tensor
    stratum: Tensor
    label: Tensor
    order: Tensor
    cf_r_chosen: Tensor
    cf_r_rejected: Tensor
    role_item: Tensor | None = None
    chosen_role: Tensor | None = None
    rejected_role: Tensor | None = None

    def __len__(self) -> int:
        return int(self.r_chosen.shape[0])


@dataclass
class CellStats:
    """Sums and counts per cell, shape [C] each. Add two to pool batches or processes."""

    num: Tensor
    cnt: Tensor
    num_ref: Tensor
    cnt_ref: Tensor

    def __add__(self, other: CellStats) -> CellStats:
        return CellStats(self.num + other.num, self.cnt + other.cnt, self.num_ref + other.num_ref,
                         self.cnt_ref + other.cnt_ref)

    def scaled(self, factor: float) -> CellStats:
        return CellStats(self.num * factor, self.cnt * factor, self.num_ref * factor, self.cnt_ref * factor)

    def detach(self) -> CellStats:
        return CellStats(self.num.detach(), self.cnt.detach(), self.num_ref.detach(), self.cnt_ref.detach())

    def stacked(self) -> Tensor:
        return torch.stack([self.num, self.cnt, self.num_ref, self.cnt_ref])

    @staticmethod
    def from_stacked(t: Tensor) -> CellStats:
        return CellStats(t[0], t[1], t[2], t[3])


def _scatter(values: Tensor, index: Tensor, size: int) -> Tensor:
    out = torch.zeros(size, dtype=values.dtype, device=values.device)
    return out.index_add(0, index, values)


class Constraint:
    """Base class. Subclasses define :meth:`cell_names` and :meth:`cell_stats`."""

    kind: str = ""
    two_sided: bool = True

    def __init__(self, epsilon: float = 0.05, min_count: int = 10, temperature: float = 0.25) -> None:
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
        return per_cell, _scatter(lam_c / cnt_ref.clamp_min(1.0), anchor, n_anchor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(epsilon={self.epsilon})"


def margin_scale(d: Tensor) -> Tensor:
    """Scale of the proxies: the batch's standard deviation of reward margins (in the gradient: a detached
    scale let the model satisfy the proxies by shrinking every margin). Scalar."""
    return d.std(unbiased=False) + 1e-6 if d.numel() > 1 else d.new_ones(())


class _CoefSigmoidDot(torch.autograd.Function):
    """``scale * coef . sigmoid(d / (t s)) - shift`` with s = std(d) + 1e-6 (population std, in the gradient):
    the ``margin_sigmoid`` pair term dotted with its coefficients, with the backward written out. Same value
    and gradient as ``scale * torch.dot(coef, pair_term(("margin_sigmoid", t), batch)) - shift`` (tested), in
    one autograd node of a few ops with Python-float scalars: on a ~2 ms head step the constraint's cost is
    dispatch overhead, not arithmetic (penalty + its backward on a 128-pair batch: 160 us, against 180 us
    through autograd; a Bradley-Terry loss + backward is 80 us)."""

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
        return _huber(dc, t) + _huber(dr, t)
    if kind in ("role_dp", "role_eo"):
        raise ValueError(f"{kind!r} is an item term: ProxyGDA.item_penalty computes it on a batch of whole items")
    raise ValueError(f"unknown pair term {kind!r}")


def _huber(x: Tensor, delta: float) -> Tensor:
    ax = x.abs()
    return torch.where(ax < delta, 0.5 * x**2 / delta, ax - 0.5 * delta)


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
        num_a, cnt_a = _scatter(sel, a, n_a), _scatter(ones, a, n_a)
        anchor_of_cell = torch.arange(size, device=sel.device) % n_a
        return CellStats(_scatter(sel, cell, size), _scatter(ones, cell, size).detach(),
                         num_a[anchor_of_cell], cnt_a[anchor_of_cell].detach())

    def strict_members(self, batch: PairBatch) -> tuple[Tensor, Tensor, Tensor, int, int]:
        """(outcome [M] in {0, 1}, group [M], anchor [M], n_groups, n_anchor): the members behind
        :meth:`cell_stats`'s strict rates (used by :mod:`faro_core.evaluate.chance`)."""
        score, g, a = self._members(batch)
        return (score > 0).to(score.dtype), g, a, self._n_groups(), self._n_anchor()


class DemographicParity(_AnchoredRate):
    """DP of rewards: P(response naming a is preferred | A=a, S=s) vs the same for every grouped response in s.

    A response is *selected* when the reward ranks it above the other response of its pair (its
    pair-centered reward (r_self - r_other)/2 is above 0). DESIGN §4 first used the population median of
    raw rewards as the threshold; measurement showed why that fails: Bradley-Terry is blind to per-prompt
    offsets, so raw rewards of different prompts are not comparable (in a raw-reward DP run on the demo
    data Nationality prompts sat near -24 and Age prompts near +33), and "DP" of raw rewards measured the
    prompt's category, not the group -- while the KL-regularized policy, which only sees rewards within a prompt,
    is unaffected by such offsets. Pair-centered selection is offset-invariant and is what transfers.
    Responses naming no group are left out. Proxy: sigmoid(margin / (T * s)), s the batch's standard
    deviation of margins (in the gradient).

    *Partner.* Selection is conditioned on the kind of response it is compared with: one naming no group
    ("vs-none", on BBQ the "unknown" answer) or one naming a group ("vs-group"); the population anchor is per
    stratum and partner kind. Why: against a group-naming partner one of the two responses is always selected
    (the stratum's rate is exactly 1/2), against a neutral one a good reward rarely selects either. Pooled, a
    group's rate measured its *mix of partners*, not the reward: on BBQ with skew 0.3 the relabelled items
    contribute (biased answer, other group's answer) pairs, a BT reward selects group answers over "unknown"
    only ~3% of the time but ~50% in those pairs, and the cells' pooled rates (~0.15) varied with how many
    such pairs each cell drew. Faro-DP trained on the pooled rates *doubled* the rate at which answers naming
    a group beat "unknown" (0.027 -> 0.055 on training) to equalize that mix, and its test violation rose above
    BT's. ``GroupIndex.dp_partner=False`` restores the pooled definition.

    *Scope.* DP holds only in the strata listed in ``GroupIndex.dp_strata`` (None: all). On BBQ the default
    scope is the ambiguous contexts: there the evidence leaves the answer undetermined, so the correct
    reward prefers "unknown" and ranks every group's answer the same way, and any group difference is bias.
    In disambiguated contexts the evidence names the answer, and how often each group is the correct one
    is a property of the sample: the gold-label reward itself violates DP there by 0.18 on the BBQ
    validation split (0.07 on training), so equal selection rates would demand wrong answers. EO, which
    conditions on the truth, is the constraint for those contexts.
    """

    kind = "dp"

    def __init__(self, epsilon: float = 0.05, min_count: int = 10, temperature: float = 0.5) -> None:
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

    def __init__(self, epsilon: float = 0.05, min_count: int = 10, temperature: float = 0.5) -> None:
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

    def __init__(self, epsilon: float = 0.05, min_count: int = 10, temperature: float = 0.1) -> None:
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
            dev = _huber(diff, self.temperature)
        else:
            dev = diff.abs()
        a = torch.cat([batch.group[m], batch.group[m]])
        cell = torch.where(a >= 0, a, torch.full_like(a, k))
        ones = torch.ones_like(dev)
        num = _scatter(dev, cell, k + 1)
        cnt = _scatter(ones, cell, k + 1)
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


CONSTRAINT_TYPES: dict[str, type[Constraint]] = {
    "dp": DemographicParity,
    "eo": EqualizedOdds,
    "cf": CounterfactualFairness,
}


class ConstraintSet:
    """Several constraints composed (e.g. DP and CF): one vector of one-sided constraints.

    ``epsilon = inf`` drops a constraint (it can never bind), which is what makes ``--epsilon inf``
    *exactly* plain Bradley-Terry.
    """

    def __init__(self, constraints: list[Constraint]) -> None:
        self.constraints = [c for c in constraints if math.isfinite(c.epsilon)]

    @classmethod
    def parse(cls, spec: str | list[str] | None, epsilon: float | dict[str, float], index: GroupIndex,
              min_count: int = 10, temperature: dict[str, float] | None = None) -> ConstraintSet:
        """Build from ``"dp,cf"`` (or a list); ``none``/empty gives no constraint."""
        kinds = spec.split(",") if isinstance(spec, str) else list(spec or [])
        kinds = [k.strip().lower() for k in kinds if k and k.strip().lower() not in ("none", "")]
        out = []
        for k in kinds:
            if k not in CONSTRAINT_TYPES:
                from faro_core.errors import FaroError

                raise FaroError(f"unknown constraint {k!r}; choose from none, {', '.join(CONSTRAINT_TYPES)}")
            eps = epsilon[k] if isinstance(epsilon, dict) else epsilon
            kw = {"epsilon": eps, "min_count": min_count}
            if temperature and k in temperature:
                kw["temperature"] = temperature[k]
            out.append(constraint_types(index)[k](**kw).bind(index))
        return cls(out)

    def __len__(self) -> int:
        return sum(len(c.names()) for c in self.constraints)

    def __bool__(self) -> bool:
        return bool(self.constraints)

    def names(self) -> list[str]:
        return [n for c in self.constraints for n in c.names()]

    def kinds(self) -> list[str]:
        """Kind of each one-sided constraint, aligned with :meth:`names`."""
        return [c.kind for c in self.constraints for _ in c.names()]

    def epsilons(self) -> Tensor:
        return torch.tensor([c.epsilon for c in self.constraints for _ in c.names()], dtype=torch.float32)

    def cell_stats(self, batch: PairBatch, smooth: bool) -> list[CellStats]:
        return [c.cell_stats(batch, smooth) for c in self.constraints]

    def values(self, stats: list[CellStats], min_count: int | None = None) -> Tensor:
        if not self.constraints:
            return torch.zeros(0)
        return torch.cat([c.values(s, min_count) for c, s in zip(self.constraints, stats)])

    def strict(self, batch: PairBatch, min_count: int | None = None) -> Tensor:
        with torch.no_grad():
            return self.values(self.cell_stats(batch, smooth=False), min_count)

    def proxy(self, batch: PairBatch, min_count: int | None = None) -> Tensor:
        return self.values(self.cell_stats(batch, smooth=True), min_count)

    def fix_cells(self, full: PairBatch) -> dict[str, int]:
        """Constrain only cells with at least ``min_count`` members (and anchor members) in ``full``, the
        whole training split. A smaller cell cannot meet a small epsilon even in principle (a cell of n has
        rates k/n) and its multiplier would grow without bound and drown the rest. Returns counts."""
        out = {"cells": 0, "constrained": 0}
        for c, s in zip(self.constraints, self.cell_stats(full, smooth=False)):
            c.cell_mask = None
            _, ok = c.disparities(s)
            c.cell_mask = ok
            c.full_counts = (s.cnt.detach().float().cpu(), s.cnt_ref.detach().float().cpu())
            out["cells"] += int(ok.numel())
            out["constrained"] += int(ok.sum())
        return out

    def pair_coefficients(self, pairs: PairBatch, lam: Tensor) -> dict[tuple[str, float], Tensor]:
        """Per-pair coefficients [N] of the linearized penalty, one vector per smooth term (summed over
        constraints that share it), so that ``sum_j lam_j g~_j = sum_key sum_i coef[key]_i phi_key_i + const``
        with cell counts of the training split (:meth:`fix_cells`). ``pairs`` needs attributes only."""
        out: dict[tuple[str, float], Tensor] = {}
        off = 0
        for c in self.constraints:
            m = len(c.names())
            coef = c.pair_coefficients(pairs, lam[off:off + m].float().cpu())
            off += m
            key = c.term_key()
            out[key] = out[key] + coef if key in out else coef
        return out

    def max_by_kind(self, values: Tensor) -> dict[str, float]:
        """Largest one-sided value per constraint kind: the ``violation`` reported for a run."""
        out: dict[str, float] = {}
        for kind, v in zip(self.kinds(), values.tolist()):
            out[kind] = max(out.get(kind, 0.0), float(v))
        return out


def constraint_types(index: GroupIndex) -> dict[str, type[Constraint]]:
    """The constraint class of each kind for the index's attribute: DP and EO by named group, or by
    stereotype role (:mod:`faro_core.fairness.role`); CF either way."""
    if index.attribute == "role":
        from faro_core.fairness.role import ROLE_CONSTRAINT_TYPES

        return {**CONSTRAINT_TYPES, **ROLE_CONSTRAINT_TYPES}
    return CONSTRAINT_TYPES


def all_constraints(index: GroupIndex, min_count: int = 10) -> ConstraintSet:
    """DP, EO and CF with epsilon 0: used to *measure* every violation, whatever was trained."""
    return ConstraintSet([cls(epsilon=0.0, min_count=min_count).bind(index)
                          for cls in constraint_types(index).values()])


def cf_flip_rate(batch: PairBatch) -> float:
    """Share of twin pairs whose ranking (chosen vs rejected) flips under the group swap."""
    m = ~torch.isnan(batch.cf_r_chosen) & ~torch.isnan(batch.cf_r_rejected)
    if not bool(m.any()):
        return float("nan")
    a = (batch.r_chosen - batch.r_rejected)[m] > 0
    b = (batch.cf_r_chosen - batch.cf_r_rejected)[m] > 0
    return float((a != b).float().mean())
