"""The stereotype role's trainer constraints: DP(role) and EO(role) on a :class:`PairBatch` (torch).

:class:`RoleParity` and :class:`RoleOdds` are the quantities of :mod:`faro_core.fairness.role_stats` as trainer
constraints on a batch carrying role codes (kinds ``dp`` and ``eo``), with smooth proxies and a penalty that
is linear in one smooth term per item (see :meth:`RoleParity.pair_coefficients`); :class:`ItemTable` is the
batch's per-item view they are computed on, :func:`item_term` the smooth term per pair, and
:func:`batch_role_items` the item table's violation columns from a batch (the trainer's chance tier).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from faro_core.fairness.constraints import DEFAULT_MIN_COUNT, Constraint
from faro_core.fairness.pairs import CellStats, PairBatch
from faro_core.fairness.scatter import scatter_sum as _scatter

ITEM_TERMS = ("role_dp", "role_eo")  # smooth terms computed per item (both answers' rewards), not per pair


class ItemTable:
    """Per-item view of a :class:`PairBatch` carrying role codes (``role_item``, ``chosen_role``,
    ``rejected_role``): K items present in the batch, in ascending item code.

    ``r`` [K, 3] rewards of the biased, counter and "unknown" answers (mean over the batch's pairs that hold
    the answer; 0 where ``present`` [K, 3] is False), ``correct`` [K] role code of the correct answer (label 1:
    the chosen one, 0: the rejected one; -1 when no pair says), ``stratum`` [K], ``pair_item`` [B] the
    position of each pair's item (-1: none), ``n_pairs`` [K]. ``r`` is differentiable in the batch's rewards.
    """

    def __init__(self, batch: PairBatch) -> None:
        if batch.role_item is None:
            raise ValueError("the batch carries no role codes (train with --attribute role)")
        item = batch.role_item
        dev, dtype = batch.r_chosen.device, batch.r_chosen.dtype
        plan = _item_plan(batch)
        keep, k = plan["keep"], plan["k"]
        r_sum = torch.zeros(k * 3, dtype=dtype, device=dev)
        for r, ok, pos in ((batch.r_chosen, plan["ok_c"], plan["pos_c"]), (batch.r_rejected, plan["ok_r"], plan["pos_r"])):
            r_sum = r_sum.index_add(0, pos, r[keep][ok])
        cnt = plan["cnt"].to(dev, dtype)
        self.present = (cnt > 0).view(k, 3)
        self.r = (r_sum / cnt.clamp_min(1.0)).view(k, 3)
        self.correct, self.stratum, self.n_pairs = plan["correct"], plan["stratum"], plan["n_pairs"]
        self.pair_item = plan["pair_item"]
        self.codes = plan["codes"]
        assert len(self.pair_item) == len(item)

    def __len__(self) -> int:
        return int(self.r.shape[0])


_PLANS: dict[bytes, dict[str, Any]] = {}  # ItemTable's reward-free structure by the batch's codes (bounded)
_PLANS_MAX = 64


def _item_plan(batch: PairBatch) -> dict[str, Any]:
    """What an :class:`ItemTable` needs besides the rewards -- items, answer positions, counts, correct roles,
    strata -- computed once per set of role codes (the batches of a run repeat: the splits every validation
    and dual pass, a step's pairs for every member that shares them). Keyed by the codes' bytes, so equal codes
    give the same tensors, and read-only for its users."""
    parts = (batch.role_item, batch.chosen_role, batch.rejected_role, batch.label, batch.stratum)
    key = b"|".join(t.detach().cpu().contiguous().numpy().tobytes() for t in parts) + str(batch.r_chosen.device).encode()
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    item = batch.role_item
    dev, dtype = batch.r_chosen.device, batch.r_chosen.dtype
    keep = item >= 0
    uniq, inv = torch.unique(item[keep], return_inverse=True)
    k = len(uniq)
    cnt = torch.zeros(k * 3, dtype=dtype, device=dev)
    plan = {"keep": keep, "k": k, "codes": uniq}
    for tag, role in (("c", batch.chosen_role), ("r", batch.rejected_role)):
        role = role[keep]
        ok = role >= 0
        pos = inv[ok] * 3 + role[ok]
        cnt = cnt.index_add(0, pos, torch.ones(len(pos), dtype=dtype, device=dev))
        plan[f"ok_{tag}"], plan[f"pos_{tag}"] = ok, pos
    plan["cnt"] = cnt
    lab = batch.label[keep]
    cr, rr = batch.chosen_role[keep], batch.rejected_role[keep]
    corr = torch.where(lab == 1, cr, torch.where(lab == 0, rr, torch.full_like(cr, -1)))
    plan["correct"] = torch.full((k,), -1, dtype=torch.long, device=dev).scatter_reduce(0, inv, corr, reduce="amax")
    plan["stratum"] = torch.zeros(k, dtype=torch.long, device=dev).scatter_reduce(
        0, inv, batch.stratum[keep], reduce="amax")
    plan["n_pairs"] = torch.bincount(inv, minlength=k)
    pair_item = torch.full((len(item),), -1, dtype=torch.long, device=dev)
    pair_item[keep] = inv
    plan["pair_item"] = pair_item
    if len(_PLANS) >= _PLANS_MAX:
        try:  # the batched engine's threads share the cache: another may have dropped the same oldest plan
            _PLANS.pop(next(iter(_PLANS)), None)
        except (RuntimeError, StopIteration):
            pass
    _PLANS[key] = plan
    return plan


def _scale(x: Tensor) -> Tensor:
    """The proxies' scale: population standard deviation of the members' reward differences (in the gradient,
    as :func:`~faro_core.fairness.penalty.margin_scale`; 1 for fewer than two members)."""
    return x.std(unbiased=False) + 1e-6 if x.numel() > 1 else x.new_ones(())


class _RoleConstraint(Constraint):
    """Shared machinery of the role constraints: cells are strata (``GroupIndex.strata``, restricted by
    :meth:`_strata_codes`), members are items, and the penalty is linear in one smooth term per item."""

    term_kind = ""

    def _strata_codes(self) -> list[int]:
        assert self.index is not None
        return list(range(len(self.index.strata)))

    def cell_names(self) -> list[str]:
        assert self.index is not None, "bind() the constraint to a GroupIndex first"
        return [f"role|{self.index.strata[i]}" for i in self._strata_codes()]

    def _cell_of(self, stratum: Tensor) -> Tensor:
        assert self.index is not None
        pos = torch.full((len(self.index.strata),), -1, dtype=torch.long)
        codes = self._strata_codes()
        if codes:
            pos[torch.tensor(codes, dtype=torch.long)] = torch.arange(len(codes))
        return pos.to(stratum.device)[stratum]

    def members(self, tab: ItemTable) -> tuple[Tensor, Tensor, Tensor]:
        """(member mask [K], cell [K] (-1 out of scope), side [K] +1 / -1: which count the member is in)."""
        raise NotImplementedError

    def item_values(self, tab: ItemTable, smooth: bool) -> Tensor:
        """[K] the strict outcome x (smooth: its proxy) of each item (meaningful on members only)."""
        raise NotImplementedError

    def cell_stats(self, batch: PairBatch, smooth: bool) -> CellStats:
        tab = ItemTable(batch)
        m, cell, side = self.members(tab)
        x = self.item_values(tab, smooth)
        c = self.n_cells
        mp, mn = m & (side > 0), m & (side < 0)
        return self._stats(x, cell, mp, mn, c)

    def _stats(self, x: Tensor, cell: Tensor, mp: Tensor, mn: Tensor, c: int) -> CellStats:
        raise NotImplementedError

    def term_key(self) -> tuple[str, float]:
        return (self.term_kind, self.temperature)

    def item_coefficients(self, tab: ItemTable, lam: Tensor) -> Tensor:
        """coef [K] on each item's smooth term such that sum_j lam_j g~_j = sum_k coef_k psi_k + const, with the
        training split's cell counts (:meth:`ConstraintSet.fix_cells`)."""
        raise NotImplementedError

    def pair_coefficients(self, pairs: PairBatch, lam: Tensor) -> Tensor:
        """coef [N]: each item's coefficient spread evenly over its pairs, so that a batch holding whole items
        gives ``sum_i coef_i phi_i = sum_k coef_k psi_k`` with phi_i = psi of pair i's item
        (:func:`item_term`). 0 on pairs of no role item."""
        tab = ItemTable(pairs)
        coef_k = self.item_coefficients(tab, lam.to(tab.r.dtype)) / tab.n_pairs.clamp_min(1).to(tab.r.dtype)
        out = torch.zeros(len(pairs.r_chosen), dtype=tab.r.dtype)
        has = tab.pair_item >= 0
        out[has] = coef_k[tab.pair_item[has]]
        return out

    def _lam_cells(self, lam: Tensor) -> Tensor:
        c = self.n_cells
        lam_c = lam[:c] - lam[c:]
        if self.cell_mask is not None:
            lam_c = torch.where(self.cell_mask.to(lam_c.device), lam_c, torch.zeros_like(lam_c))
        return lam_c


class RoleParity(_RoleConstraint):
    """DP(role): in each DP stratum (``GroupIndex.dp_strata``; on BBQ the ambiguous contexts), the rate at
    which the biased answer outranks the counter answer of the same item, against 1/2:

        d_s = mean_{k in s} x_k - 1/2,   x_k = 1[r_b > r_c] + 1/2 * 1[r_b = r_c]      (one-sided: +-d_s <= eps)

    Members are the items with both answers; strata are the run's (pooled over polarity and category unless
    ``--strata`` adds them). Proxy: x~_k = sigmoid((r_b - r_c) / (T s)), s the standard deviation of
    r_b - r_c over the batch's members (in the gradient). As cell statistics: num = sum x, cnt = n,
    num_ref = n / 2, cnt_ref = n.
    """

    kind = "dp"
    term_kind = "role_dp"

    def __init__(self, epsilon: float = 0.05, min_count: int = DEFAULT_MIN_COUNT, temperature: float = 0.5) -> None:
        super().__init__(epsilon, min_count, temperature)

    def _strata_codes(self) -> list[int]:
        assert self.index is not None
        return self.index.dp_strata_codes()

    def members(self, tab: ItemTable) -> tuple[Tensor, Tensor, Tensor]:
        cell = self._cell_of(tab.stratum)
        m = tab.present[:, 0] & tab.present[:, 1] & (cell >= 0)
        return m, cell, torch.ones_like(cell)

    def item_values(self, tab: ItemTable, smooth: bool) -> Tensor:
        m, _, _ = self.members(tab)
        diff = tab.r[:, 0] - tab.r[:, 1]
        if smooth:
            return torch.sigmoid(diff / (self.temperature * _scale(diff[m])))
        return (diff > 0).to(diff.dtype) + 0.5 * (diff == 0).to(diff.dtype)

    def _stats(self, x: Tensor, cell: Tensor, mp: Tensor, mn: Tensor, c: int) -> CellStats:
        num = _scatter(x[mp], cell[mp], c)
        cnt = _scatter(torch.ones_like(x[mp]), cell[mp], c).detach()
        return CellStats(num, cnt, 0.5 * cnt, cnt)

    def item_coefficients(self, tab: ItemTable, lam: Tensor) -> Tensor:
        if self.full_counts is None:
            raise RuntimeError("fix_cells() on the training split first: the penalty uses its cell counts")
        m, cell, _ = self.members(tab)
        cnt, _ = self.full_counts
        per = self._lam_cells(lam) / cnt.clamp_min(1.0).to(lam.dtype)
        return torch.where(m, per[cell.clamp_min(0)], torch.zeros(len(m), dtype=lam.dtype))


class RoleOdds(_RoleConstraint):
    """EO(role): in each stratum, the item-level accuracy on items whose correct answer is the biased one
    against items whose correct answer is the counter one (on BBQ: the disambiguated contexts):

        d_s = (acc_b - acc_c) / 2,   acc_r = mean over items of s with correct role r of x_k      (+-d_s <= eps)

    x_k = 1 when the correct answer has the strictly top reward of the item's answers, 1/t on a t-way tie.
    Proxy: the softmax probability of the correct answer, exp(r_y / tau) / sum_j exp(r_j / tau), tau = T s,
    s the standard deviation of the (correct - other) reward differences over the batch's members (in the
    gradient). It is the choice probability of the Gibbs policy over the item's answers at 1/tau, it tends
    to x_k as tau -> 0, and it is smooth in every reward of the item. As cell statistics: num = sum_b x / 2,
    cnt = n_b, num_ref = sum_c x / 2, cnt_ref = n_c, so that d = num/cnt - num_ref/cnt_ref and a cell needs
    ``min_count`` items of each role.
    """

    kind = "eo"
    term_kind = "role_eo"

    def __init__(self, epsilon: float = 0.05, min_count: int = DEFAULT_MIN_COUNT, temperature: float = 0.5) -> None:
        super().__init__(epsilon, min_count, temperature)

    def members(self, tab: ItemTable) -> tuple[Tensor, Tensor, Tensor]:
        cell = self._cell_of(tab.stratum)
        corr = tab.correct
        role_ok = (corr == 0) | (corr == 1)
        m = role_ok & tab.present[:, 0] & tab.present[:, 1] & (cell >= 0)
        side = torch.where(corr == 0, 1, -1)
        return m, cell, side

    def item_values(self, tab: ItemTable, smooth: bool) -> Tensor:
        m, _, _ = self.members(tab)
        corr = tab.correct.clamp(0, 2)
        r = tab.r
        r_y = r.gather(1, corr[:, None])
        if smooth:
            gaps = (r_y - r)[tab.present & m[:, None] & (torch.arange(3, device=r.device)[None, :] != corr[:, None])]
            tau = self.temperature * _scale(gaps)
            logits = torch.where(tab.present, r / tau, torch.full_like(r, -torch.inf))
            return torch.softmax(logits, dim=1).gather(1, corr[:, None]).squeeze(1)
        filled = torch.where(tab.present, r, torch.full_like(r, -torch.inf))
        top = filled.max(dim=1, keepdim=True).values
        at_top = filled == top
        mine = at_top.gather(1, corr[:, None]).squeeze(1)
        return torch.where(mine, 1.0 / at_top.sum(dim=1).to(r.dtype), torch.zeros_like(r[:, 0]))

    def _stats(self, x: Tensor, cell: Tensor, mp: Tensor, mn: Tensor, c: int) -> CellStats:
        num = 0.5 * _scatter(x[mp], cell[mp], c)
        cnt = _scatter(torch.ones_like(x[mp]), cell[mp], c).detach()
        num_ref = 0.5 * _scatter(x[mn], cell[mn], c)
        cnt_ref = _scatter(torch.ones_like(x[mn]), cell[mn], c).detach()
        return CellStats(num, cnt, num_ref, cnt_ref)

    def item_coefficients(self, tab: ItemTable, lam: Tensor) -> Tensor:
        if self.full_counts is None:
            raise RuntimeError("fix_cells() on the training split first: the penalty uses its cell counts")
        m, cell, side = self.members(tab)
        cnt, cnt_ref = (t.to(lam.dtype) for t in self.full_counts)
        lam_c = self._lam_cells(lam)
        cc = cell.clamp_min(0)
        per = torch.where(side > 0, 0.5 * lam_c[cc] / cnt[cc].clamp_min(1.0), -0.5 * lam_c[cc] / cnt_ref[cc].clamp_min(1.0))
        return torch.where(m, per, torch.zeros(len(m), dtype=lam.dtype))


ROLE_CONSTRAINT_TYPES: dict[str, type[Constraint]] = {"dp": RoleParity, "eo": RoleOdds}


def item_term(key: tuple[str, float], batch: PairBatch, constraint: _RoleConstraint | None = None) -> Tensor:
    """phi [B]: the smooth term of each pair's item (0 on pairs whose item is not a member in ``batch``), for
    the term ``key`` = (``"role_dp"`` | ``"role_eo"``, temperature). Needs the item's pairs in the batch."""
    kind, t = key
    if constraint is None:
        constraint = (RoleParity if kind == "role_dp" else RoleOdds)(temperature=t)
    tab = ItemTable(batch)
    m, _, _ = constraint.members(tab) if constraint.index is not None else _scope_free_members(constraint, tab)
    psi = constraint.item_values(tab, smooth=True)
    psi = torch.where(m, psi, torch.zeros_like(psi))
    has = tab.pair_item >= 0
    out = torch.zeros(len(batch.r_chosen), dtype=psi.dtype, device=psi.device)
    return out.masked_scatter(has, psi[tab.pair_item[has]])


def _scope_free_members(constraint: _RoleConstraint, tab: ItemTable) -> tuple[Tensor, Tensor, Tensor]:
    """members() without a GroupIndex: every item with both answers (DP) / a biased or counter correct
    answer (EO), all in cell 0."""
    zero = torch.zeros(len(tab), dtype=torch.long, device=tab.r.device)
    both = tab.present[:, 0] & tab.present[:, 1]
    if isinstance(constraint, RoleParity):
        return both, zero, torch.ones_like(zero)
    corr = tab.correct
    return both & ((corr == 0) | (corr == 1)), zero, torch.where(corr == 0, 1, -1)


def batch_role_items(batch: PairBatch, index: Any) -> pd.DataFrame:
    """The :func:`role_items` columns that tests of the role violations read (``x_dp``, ``x_eo``,
    ``correct_role``, ``stratum``), from a :class:`PairBatch` with role codes: DP items are those in the
    index's DP strata, EO items those whose correct answer is biased or counter (the trainer's definitions,
    :class:`RoleParity` / :class:`RoleOdds`). For the trainer's chance tier of iterate selection, which holds
    a validation batch rather than a scores frame."""
    tab = ItemTable(batch)
    out = {}
    for kind, cls in (("dp", RoleParity), ("eo", RoleOdds)):
        c = cls(epsilon=0.0, min_count=1).bind(index)
        m = c.members(tab)[0]
        x = c.item_values(tab, smooth=False).detach().double()
        out[f"x_{kind}"] = torch.where(m, x, torch.full_like(x, float("nan"))).numpy()
    names = np.array(["biased", "counter", "unknown", ""], dtype=object)
    return pd.DataFrame({**out, "correct_role": names[tab.correct.numpy()],
                         "stratum": np.asarray(index.strata, dtype=object)[tab.stratum.numpy()]})
