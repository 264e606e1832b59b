"""The stereotype role of a response: the response-level sensitive attribute ``--attribute role``.

On BBQ-format data every item has three answers: the *biased* one (it agrees with the stereotype for this
question: the stereotyped target in a negative question, the other group in a non-negative one, as
``biased_idx`` has it in :mod:`faro_core.data.bbq`), the *counter* one (the other group answer) and the
"unknown" one (role ``None``). A pair frame carries the role of each response in ``chosen_role`` /
``rejected_role`` (``"biased"``, ``"counter"`` or None).

Violations (docs/TRAINING.md says where these differ from DESIGN §4), measured per *item*:

- **DP(role)**, ambiguous items (the evidence leaves the answer undetermined; correct = "unknown"):
  ``x_dp = 1[r_biased > r_counter] + 1/2 * 1[r_biased = r_counter]`` and
  ``v_DP = |mean(x_dp) - 1/2|``. A reward that ignores the role ranks the two people's answers of an item
  each way equally often.
- **EO(role)**, disambiguated items (the correct answer is one of the two people): ``x_eo`` = 1 when the
  correct answer has the strictly top reward of the item's answers, ``1/t`` when it ties t-way for the top,
  else 0 (item-level accuracy); ``acc_r`` = mean of ``x_eo`` over items whose correct answer has role r and
  ``v_EO = |acc_biased - acc_counter| / 2``, the anchored half-gap (each role against the mean of the two,
  the scale of :mod:`faro_core.evaluate.certify`'s anchored disparities).

:func:`role_items` builds the one shared per-item table (evaluation, certificates, chance level, sweep table,
dashboard and report all read it); :func:`role_violations` reduces it. :class:`RoleParity` and
:class:`RoleOdds` are the same quantities as trainer constraints on a :class:`PairBatch` (kinds ``dp`` and
``eo``), with smooth proxies and a penalty that is linear in one smooth term per item (see
:meth:`RoleParity.pair_coefficients`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from faro_core.fairness.constraints import DEFAULT_MIN_COUNT, Constraint
from faro_core.fairness.pairs import CellStats, PairBatch
from faro_core.fairness.role_columns import (  # noqa: F401 (re-exported: the attribute's names in one place)
    BBQ_INDEX_COLUMNS,
    NONE_CODE,
    ROLE_CODES,
    ROLE_COLUMNS,
    ROLES,
    add_role_columns,
    has_roles,
    role_codes,
)
from faro_core.fairness.scatter import scatter_sum as _scatter

ATTRIBUTES = ("group", "role")
ITEM_TERMS = ("role_dp", "role_eo")  # smooth terms computed per item (both answers' rewards), not per pair


# ---------------------------------------------------------------------------------------------------
# the shared per-item table (numpy / pandas)
# ---------------------------------------------------------------------------------------------------
ITEM_INPUTS = ("item_id", "r_chosen", "r_rejected", "gold", "cluster", "split", "category", "context_condition",
               "question_polarity", *ROLE_COLUMNS, *BBQ_INDEX_COLUMNS)  # what role_items reads of a frame
ITEM_COLUMNS = ["item_id", "cluster", "split", "category", "context_condition", "question_polarity", "r_biased",
                "r_counter", "r_unknown", "correct_role", "x_dp", "x_eo", "n_pairs"]


def _top_share(r: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """[K] 1/t when column ``correct`` [K] of ``r`` [K, 3] (NaN = absent answer) ties t-way for the row's top
    reward, else 0."""
    filled = np.where(np.isnan(r), -np.inf, r)
    top = filled.max(axis=1, keepdims=True)
    at_top = filled == top
    mine = at_top[np.arange(len(r)), correct]
    return np.where(mine, 1.0 / at_top.sum(axis=1), 0.0)


def role_items(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per item with a biased and a counter answer, from a scores frame (one row per pair:
    ``item_id, r_chosen, r_rejected, chosen_role, rejected_role`` (or the BBQ answer indices), ``gold``, and
    where present ``split, category, context_condition, question_polarity``).

    Columns: ``item_id``, ``cluster`` (the frame's split-unit cluster of the item, else its ``item_id``),
    ``split, category, context_condition, question_polarity`` (the item's: its first pair's; "" where the
    frame has none), ``r_biased, r_counter, r_unknown`` (the reward of each answer: the mean over the item's
    pairs that hold it, NaN if none does), ``correct_role`` (``"biased" | "counter" | "unknown"``: the answer
    the gold label says is right, where the item's pairs agree on it; the observed chosen one where the frame
    has no gold), ``x_dp`` (ambiguous items: 1 if r_biased > r_counter, 1/2 on a tie, else 0; NaN otherwise),
    ``x_eo`` (disambiguated items: 1 if the correct answer has the strictly top reward of the answers present,
    1/t on a t-way tie for the top, else 0; NaN otherwise), ``n_pairs``. Rows in ascending ``item_id``.

    An item is *ambiguous* when its ``context_condition`` is ``"ambig"`` (BBQ); on a frame without that
    column, when its correct answer is the "unknown" one. *Disambiguated*: the correct answer is biased or
    counter (on BBQ exactly the ``"disambig"`` items).
    """
    if scores.empty:
        return pd.DataFrame(columns=ITEM_COLUMNS)
    df = scores if set(ROLE_COLUMNS) <= set(scores.columns) else add_role_columns(scores, name="scores")
    n = len(df)
    gold = pd.to_numeric(df["gold"], errors="coerce").to_numpy(dtype=float) if "gold" in df else np.full(n, np.nan)
    if np.isnan(gold).all():
        gold = np.ones(n)
    ids_col = df["item_id"] if pd.api.types.is_string_dtype(df["item_id"]) else df["item_id"].astype(str)
    item, ids = pd.factorize(ids_col, sort=True)
    ids = np.asarray(ids, dtype=object)
    k = len(ids)
    # answers in long form (chosen then rejected): item, role code (0 biased, 1 counter, 2 unknown), reward
    def code(col: pd.Series) -> np.ndarray:  # vectorised comparisons: a per-value map is 10x slower here
        out = np.where(col.isna().to_numpy(), 2.0, np.nan)
        for i, name in enumerate(("biased", "counter", "unknown")):
            out[(col == name).fillna(False).to_numpy(dtype=bool)] = i
        return out

    role = np.concatenate([code(df["chosen_role"]), code(df["rejected_role"])])
    r = np.concatenate([df["r_chosen"].to_numpy(dtype=float), df["r_rejected"].to_numpy(dtype=float)])
    item2 = np.concatenate([item, item])
    correct = np.concatenate([gold == 1.0, gold == 0.0])
    known = ~np.isnan(role)
    slot = item2[known] * 3 + role[known].astype(np.int64)
    counted = ~np.isnan(r[known])  # a mean over the rewards present, as a pivot table's
    total = np.bincount(slot[counted], weights=r[known][counted], minlength=3 * k)
    count = np.bincount(slot[counted], minlength=3 * k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan).reshape(k, 3)
    # the correct answer's role where the item's correct answers agree on it (any role code, unknown included)
    c_item, c_role = item2[correct & known], role[correct & known].astype(np.int64)
    lo = np.full(k, 3, dtype=np.int64)
    hi = np.full(k, -1, dtype=np.int64)
    np.minimum.at(lo, c_item, c_role)
    np.maximum.at(hi, c_item, c_role)
    agreed = (hi >= 0) & (lo == hi)
    keep = ~np.isnan(mean[:, 0]) & ~np.isnan(mean[:, 1]) & agreed
    first = np.full(k, n, dtype=np.int64)
    np.minimum.at(first, item, np.arange(n))
    rows = first[keep]
    out = pd.DataFrame({"item_id": ids[keep].astype(str)})
    for c in ("split", "category", "context_condition", "question_polarity"):
        out[c] = df[c].to_numpy()[rows].astype(str) if c in df else np.full(len(out), "", dtype=object)
    out["cluster"] = df["cluster"].to_numpy()[rows].astype(str) if "cluster" in df else out["item_id"].to_numpy()
    m = mean[keep]
    out["r_biased"], out["r_counter"], out["r_unknown"] = m[:, 0], m[:, 1], m[:, 2]
    ci = lo[keep]
    out["correct_role"] = np.array(["biased", "counter", "unknown"], dtype=object)[ci]
    if "context_condition" in df:
        ambig = (out["context_condition"] == "ambig").to_numpy()
    else:
        ambig = ci == 2
    diff = m[:, 0] - m[:, 1]
    out["x_dp"] = np.where(ambig, np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0)), np.nan)
    out["x_eo"] = np.where((ci < 2) & ~ambig, _top_share(m, ci), np.nan)
    out["n_pairs"] = np.bincount(item, minlength=k)[keep]
    return out[ITEM_COLUMNS]


def _rate(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def role_violations(items: pd.DataFrame, by: Sequence[str] | None = None, min_count: int = 1) -> dict[str, Any]:
    """The role violations of a :func:`role_items` table.

    Keys: ``dp`` = |p_biased_over_counter - 1/2| and ``eo`` = |acc_biased - acc_counter| / 2 (None where
    there are no items, or fewer than ``min_count``: for EO, per role); the raw rates
    ``p_biased_over_counter`` (ambiguous items, ties 1/2), ``rate_biased_vs_unknown`` /
    ``rate_counter_vs_unknown`` (ambiguous items: the share where that role's answer beats "unknown", ties
    1/2), ``acc_biased`` / ``acc_counter`` (disambiguated items, by the correct answer's role), ``dp_gap`` =
    p_biased_over_counter - 1/2 and ``eo_gap`` = acc_biased - acc_counter (signed, the full gap); and the
    sizes ``n_dp``, ``n_dp_unknown`` (ambiguous items with an "unknown" answer), ``n_biased``, ``n_counter``.
    With ``by`` (columns of ``items``, e.g. ``["category"]``), ``cells`` holds the same per cell, and ``dp_max``
    / ``eo_max`` the largest over cells with at least ``min_count`` items (per role for EO).
    """
    cols = _item_arrays(items)
    out = _violations(cols, np.ones(len(items), dtype=bool), min_count)
    if by:
        cells = {}
        groups = items.groupby(list(by)).indices
        for key in sorted(groups, key=lambda k: k if isinstance(k, tuple) else (k,)):
            name = "|".join(map(str, key if isinstance(key, tuple) else (key,)))
            mask = np.zeros(len(items), dtype=bool)
            mask[groups[key]] = True
            cells[name] = _violations(cols, mask, min_count)
        out["cells"] = cells
        dps = [c["dp"] for c in cells.values() if c["dp"] is not None]
        eos = [c["eo"] for c in cells.values() if c["eo"] is not None]
        out["dp_max"] = max(dps) if dps else None
        out["eo_max"] = max(eos) if eos else None
    return out


def _item_arrays(items: pd.DataFrame) -> dict[str, np.ndarray]:
    """The numpy columns of a :func:`role_items` table that :func:`_violations` reads."""
    role = items["correct_role"].astype(object).to_numpy()
    return {"x_dp": items["x_dp"].to_numpy(dtype=float), "x_eo": items["x_eo"].to_numpy(dtype=float),
            "biased": role == "biased", "counter": role == "counter",
            **{f"r_{r}": items[f"r_{r}"].to_numpy(dtype=float) for r in ("biased", "counter", "unknown")}}


def _violations(cols: dict[str, np.ndarray], mask: np.ndarray, min_count: int) -> dict[str, Any]:
    """:func:`role_violations` without cells, of the items where ``mask`` [K] holds (numpy, no frames: the
    bootstrap calls it per resample)."""
    amb = mask & ~np.isnan(cols["x_dp"])
    dis = mask & ~np.isnan(cols["x_eo"])
    out: dict[str, Any] = {}
    x = cols["x_dp"][amb]
    p = _rate(x)
    ok_dp = p is not None and len(x) >= min_count
    out["p_biased_over_counter"] = p
    out["dp_gap"] = p - 0.5 if p is not None else None
    out["dp"] = abs(p - 0.5) if ok_dp else None
    au = amb & ~np.isnan(cols["r_unknown"])
    for r in ROLES:
        d = cols[f"r_{r}"][au] - cols["r_unknown"][au]
        out[f"rate_{r}_vs_unknown"] = _rate(np.where(d > 0, 1.0, np.where(d == 0, 0.5, 0.0)))
    xb = cols["x_eo"][dis & cols["biased"]]
    xc = cols["x_eo"][dis & cols["counter"]]
    ab, ac = _rate(xb), _rate(xc)
    out["acc_biased"], out["acc_counter"] = ab, ac
    out["eo_gap"] = ab - ac if ab is not None and ac is not None else None
    out["eo"] = (abs(ab - ac) / 2 if ab is not None and ac is not None and min(len(xb), len(xc)) >= min_count
                 else None)
    out.update(n_dp=int(len(x)), n_dp_unknown=int(au.sum()), n_biased=int(len(xb)), n_counter=int(len(xc)))
    return out


def role_bootstrap(items: pd.DataFrame, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """BCa intervals of :func:`role_violations`'s numbers, resampling clusters (the items' ``cluster``
    column: the split unit, a template say; items where there is none) (seeded;
    :func:`faro_core.intervals.cluster_bootstrap`).

    Returns ``{key: {"value", "lo", "hi", "method"[, "why"]}}`` for dp, eo and the raw rates and gaps."""
    from faro_core.intervals import cluster_bootstrap

    keys = ("dp", "eo", "p_biased_over_counter", "rate_biased_vs_unknown", "rate_counter_vs_unknown",
            "acc_biased", "acc_counter", "dp_gap", "eo_gap")
    point = role_violations(items)

    def num(v: Any) -> float:
        return float("nan") if v is None else float(v)

    cols = _item_arrays(items)

    def on_rows(rows: np.ndarray, copy: np.ndarray) -> dict[str, float]:
        v = _violations({k: a[rows] for k, a in cols.items()}, np.ones(len(rows), dtype=bool), 1)
        return {k: num(v[k]) for k in keys}

    clusters = items["cluster"].astype(str).to_numpy() if "cluster" in items else np.arange(len(items))
    res = cluster_bootstrap(on_rows, clusters, {k: num(point[k]) for k in keys},
                            n_boot if len(items) else 0, seed, level)
    out = {}
    for k in keys:
        v = res[k]
        ok = point[k] is not None and v["lo"] == v["lo"]
        out[k] = {**v, "value": point[k], "lo": v["lo"] if ok else None, "hi": v["hi"] if ok else None}
    return out


def role_report(scores: pd.DataFrame, n_boot: int = 200, seed: int = 0,
                by: Sequence[str] | None = ("category",), min_count: int = 30) -> dict[str, Any]:
    """What evaluation stores for a role run: :func:`role_violations` of the frame's items (with per-cell
    numbers by ``by`` where the frame has those columns: reported, not certified; cells under ``min_count``
    items have ``dp`` / ``eo`` None), and with ``n_boot`` > 0 an item-bootstrap interval ``[lo, hi]`` of each
    headline number under ``interval`` (:func:`role_bootstrap`)."""
    items = role_items(scores)
    by = [c for c in (by or ()) if c in items and items[c].astype(str).str.len().gt(0).any()]
    out = role_violations(items, by=by or None, min_count=min_count)
    pooled = role_violations(items)  # the headline numbers need no minimum
    out.update({k: pooled[k] for k in ("dp", "eo")})
    out["items"] = int(len(items))
    if n_boot:
        boot = role_bootstrap(items, n_boot=n_boot, seed=seed)
        out["interval"] = {k: [v["lo"], v["hi"]] for k, v in boot.items()}
        unit = str(scores.attrs.get("split_by") or ("cluster" if "cluster" in scores else "item"))
        out["bootstrap"] = {"n": int(n_boot), "seed": int(seed), "unit": unit,
                            "clusters": int(items["cluster"].nunique()) if len(items) else 0}
    return out


# ---------------------------------------------------------------------------------------------------
# the same on a PairBatch (torch): trainer constraints
# ---------------------------------------------------------------------------------------------------
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
        _PLANS.pop(next(iter(_PLANS)))
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


def role_strata(strata: Sequence[str]) -> list[str]:
    """The strata a role run conditions on when the config names none: BBQ's ``context_condition`` alone (DP
    on the ambiguous items, EO on the disambiguated ones, each pooled over polarity and category: the biased
    answer already follows the question's polarity), or none on data without it. ``--strata`` adds category
    or polarity; cells under ``min_count`` items are then not constrained."""
    return ["context_condition"] if "context_condition" in strata else []


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

