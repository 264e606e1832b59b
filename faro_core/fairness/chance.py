"""Chance level of a measured DP / EO violation: what a reward whose selections ignore the group would show.

A DP or EO violation is the *largest* gap over many small cells, so sampling noise alone makes it positive.
On BBQ's validation split (18 cells of 32-160 responses) a reward whose selections are independent of the
group still measures a DP violation near 0.096: the reported 0.05 slack is then below chance and a held-out
violation at or under it says little. This module measures that floor on the very batch evaluated.

Null: group labels are permuted among the members of each anchor (DP: stratum x partner kind, among
responses that name a group; EO: stratum x true label, among pairs with a group and a label), the reward's
selections are kept. Cell sizes, anchors and selection rates are those of the batch, so the permuted
violations are the violations of "the same selections, handed out at random across groups".

Caveat: permuting single responses treats them as independent. BBQ's items come from templates, and a
reward's errors cluster by template, so the true chance level is somewhat higher than this one (the
returned ``chance_median`` is a lower bound on the floor, and ``p_value`` is anti-conservative).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from faro_core.fairness.constraint_set import ConstraintSet
from faro_core.fairness.constraints import DEFAULT_MIN_COUNT, DemographicParity, EqualizedOdds
from faro_core.fairness.pairs import GroupIndex, PairBatch

PERMUTED_KINDS = ("dp", "eo")  # CF is not a between-group gap: no group-permutation null


def largest_gaps(values: np.ndarray, groups: np.ndarray, anchors: np.ndarray, n_groups: int, n_anchor: int,
                 min_count: int) -> np.ndarray:
    """Largest |cell rate - anchor rate| over estimable cells, for each row of ``values``.

    ``values`` [P, M] (each row one assignment of the members' 0/1 outcomes), ``groups`` / ``anchors`` [M]
    codes; cell = group * n_anchor + anchor; a cell is estimable when it and its anchor hold ``min_count``
    members. Returns [P] (NaN when no cell is estimable). One ``bincount`` for all rows.
    """
    n_cells = n_groups * n_anchor
    cell = groups * n_anchor + anchors
    cnt = np.bincount(cell, minlength=n_cells).astype(float)
    cnt_anchor = np.bincount(anchors, minlength=n_anchor).astype(float)
    anchor_of_cell = np.arange(n_cells) % n_anchor
    ok = (cnt >= min_count) & (cnt_anchor[anchor_of_cell] >= min_count)
    p = values.shape[0]
    if not ok.any():
        return np.full(p, np.nan)
    flat = (np.arange(p)[:, None] * n_cells + cell[None, :]).ravel()
    num = np.bincount(flat, weights=values.ravel(), minlength=p * n_cells).reshape(p, n_cells)
    flat_a = (np.arange(p)[:, None] * n_anchor + anchors[None, :]).ravel()
    num_a = np.bincount(flat_a, weights=values.ravel(), minlength=p * n_anchor).reshape(p, n_anchor)
    rate = num[:, ok] / cnt[ok]
    ref = num_a[:, anchor_of_cell[ok]] / cnt_anchor[anchor_of_cell[ok]]
    return np.abs(rate - ref).max(axis=1)


def permuted_within(values: np.ndarray, anchors: np.ndarray, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """[n_perm, M]: ``values`` shuffled among the members of each anchor, independently per row.

    Shuffling outcomes within an anchor is the same as shuffling group labels within it: cell sizes, anchor
    sizes and anchor rates are unchanged."""
    order = np.argsort(anchors, kind="stable")
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    keys = anchors[order][None, :] + rng.random((n_perm, len(order)))  # sorting keeps blocks, shuffles inside
    shuffled = values[order][np.argsort(keys, axis=1)]
    return shuffled[:, inv]


def chance_violation(batch: PairBatch, index: GroupIndex, kinds: list[str] | tuple[str, ...] = PERMUTED_KINDS,
                     min_count: int = DEFAULT_MIN_COUNT, n_perm: int = 200, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Observed largest one-sided violation and its chance level under group permutation, per kind.

    ``batch``: the evaluated pairs (rewards filled in). Cells count when they hold ``min_count`` members, as
    in the reported violation. Returns ``{kind: {"observed", "chance_median", "chance_p90", "p_value",
    "n_perm"}}`` for DP and EO (kinds outside :data:`PERMUTED_KINDS` are skipped); ``p_value`` is the share of
    permutations at least as large as the observed violation (with the usual +1 correction). A kind with no
    estimable cell reports NaN.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        if kind not in PERMUTED_KINDS:
            continue
        (c,) = ConstraintSet.parse(kind, 0.0, index, min_count=min_count).constraints
        assert isinstance(c, DemographicParity | EqualizedOdds)
        outcome, group, anchor, n_groups, n_anchor = c.strict_members(batch)
        vals, grp, anc = outcome.double().numpy(), group.numpy(), anchor.numpy()
        observed = float(largest_gaps(vals[None, :], grp, anc, n_groups, n_anchor, min_count)[0])
        nan = {"observed": observed, "chance_median": float("nan"), "chance_p90": float("nan"),
               "p_value": float("nan"), "n_perm": int(n_perm)}
        if np.isnan(observed) or n_perm <= 0:
            out[kind] = nan
            continue
        null = largest_gaps(permuted_within(vals, anc, int(n_perm), rng), grp, anc, n_groups, n_anchor, min_count)
        out[kind] = {"observed": observed, "chance_median": float(np.median(null)),
                     "chance_p90": float(np.quantile(null, 0.9)),
                     "p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null))),
                     "n_perm": int(n_perm)}
    return out


# ---------------------------------------------------------------------------------------------------
# the role attribute: one row per item (faro_core.fairness.role.role_items)
# ---------------------------------------------------------------------------------------------------
ROLE_PERM = 2000  # permutations: the smallest p-value is 1 / 2001, so p < 0.01 is resolvable


def _exact_dp_chance(x: np.ndarray) -> float:
    """E |mean(x') - 1/2| for an unbiased reward: each item's x' is x or 1 - x with probability 1/2, i.e.
    with n1 untied items, |2B - n1| / (2n), B ~ Binomial(n1, 1/2)."""
    from scipy.stats import binom

    n, n1 = len(x), int(np.sum(np.abs(x - 0.5) > 1e-12))
    if n == 0:
        return float("nan")
    b = np.arange(n1 + 1)
    return float(np.sum(binom.pmf(b, n1, 0.5) * np.abs(2 * b - n1)) / (2 * n))


def _clustered(items: Any) -> bool:
    """Do the items carry a split-unit cluster coarser than the item (a template, say)?"""
    return "cluster" in items.columns and bool(
        (items["cluster"].astype(str) != items["item_id"].astype(str)).any())


def role_chance(items: Any, kinds: list[str] | tuple[str, ...] = ("dp", "eo"), n_perm: int = ROLE_PERM,
                seed: int = 0, strata: tuple[str, ...] | None = None,
                chunk: int = 500) -> dict[str, dict[str, Any]]:
    """Chance level and permutation test of the role violations on held-out items.

    ``items``: :func:`faro_core.fairness.role.role_items` (one row per item: ``x_dp``, ``x_eo``,
    ``correct_role``, and the ``strata`` columns where present).

    - DP, v = |mean x_dp - 1/2| over ambiguous items. Null: the reward does not tell the two roles apart, so
      within an item the biased and counter answers are exchangeable; swapping them maps x_dp to 1 - x_dp
      (a tie stays 1/2). Each permutation swaps every item independently with probability 1/2 -- or, where
      the items carry a ``cluster`` coarser than the item (a template), every *cluster* with probability
      1/2, all its items together: items of one template are not independent draws, and the null
      distribution must keep their dependence (the reported ``unit`` says which).
      ``chance_mean`` is the exact expected violation under this null, E |2B - n1| / (2n) with n1 untied
      items and B ~ Binomial(n1, 1/2) (about 0.4 / sqrt(n) without ties).
    - EO, v = |acc_biased - acc_counter| / 2 over disambiguated items whose correct answer is a group answer.
      The correct answer's role cannot be swapped within an item (the context fixes it), so the null is that
      accuracy does not depend on it: the items' roles are exchangeable among the items of one stratum
      (``strata``; default: template x question polarity where the items carry a template ``cluster``, since
      both disambiguated items of a family share their correct role, else category x question polarity),
      which keeps each stratum's counts of biased-correct and counter-correct items; roles are permuted
      within strata, x_eo kept.
      ``chance_mean`` is the mean of the permuted violations.

    Returns ``{kind: {"observed", "chance_mean", "chance_median", "chance_p90", "p_value", "n_perm", "n",
    "permuted"}}`` (``permuted``: what was permuted, in words);
    ``p_value`` = (1 + #{null >= observed}) / (1 + n_perm). A kind with no items reports NaN.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, Any]] = {}
    nan = float("nan")
    clustered = _clustered(items)
    if strata is None:
        strata = ("cluster", "question_polarity") if clustered else ("category", "question_polarity")
    if "dp" in kinds:
        x_all = items["x_dp"].to_numpy(dtype=float)
        amb = ~np.isnan(x_all)
        x = x_all[amb]
        cl = (pd.factorize(items.loc[amb, "cluster"].astype(str))[0] if clustered
              else np.arange(len(x)))
        if len(x) == 0:
            out["dp"] = {"observed": nan, "chance_mean": nan, "chance_median": nan, "chance_p90": nan,
                         "p_value": nan, "n_perm": int(n_perm), "n": 0}
        else:
            c = x - 0.5
            # the sum of c per cluster: flipping a cluster flips the sign of its sum
            c_cl = np.bincount(cl, weights=c)
            observed = abs(float(c.mean()))
            null = np.concatenate([
                np.abs(((rng.random((min(chunk, n_perm - i), len(c_cl))) < 0.5) * 2.0 - 1.0) @ c_cl) / len(x)
                for i in range(0, n_perm, chunk)]) if n_perm > 0 else np.zeros(0)
            exact = _exact_dp_chance(x) if not clustered else float(null.mean()) if len(null) else nan
            out["dp"] = _null_summary(observed, null, n_perm, len(x)) | {
                "chance_mean": exact, "clusters": int(len(c_cl)),
                "permuted": (f"biased and counter answers swapped per template ({len(c_cl)} templates, all items "
                             f"of a template together), {n_perm} permutations") if clustered else
                            f"biased and counter answers swapped per item ({len(x)} items), {n_perm} permutations"}
    if "eo" in kinds:
        x = items["x_eo"].to_numpy(dtype=float)
        role = items["correct_role"].astype(str).to_numpy()
        keep = ~np.isnan(x) & np.isin(role, ["biased", "counter"])
        x, is_b = x[keep], (role[keep] == "biased").astype(float)
        if is_b.sum() == 0 or (1 - is_b).sum() == 0:
            out["eo"] = {"observed": nan, "chance_mean": nan, "chance_median": nan, "chance_p90": nan,
                         "p_value": nan, "n_perm": int(n_perm), "n": int(len(x))}
        else:
            cols = [c for c in strata if c in items.columns]
            anchors = (items.loc[keep, cols].astype(str).agg("|".join, axis=1).factorize()[0] if cols
                       else np.zeros(len(x), dtype=np.int64))
            n_b, n_c = is_b.sum(), (1 - is_b).sum()

            def gap(b: np.ndarray) -> np.ndarray:  # b [P, M] role indicators -> [P] violations
                return np.abs(b @ x / n_b - (1 - b) @ x / n_c) / 2.0

            observed = float(gap(is_b[None, :])[0])
            null = np.concatenate([gap(permuted_within(is_b, anchors, min(chunk, n_perm - i), rng))
                                   for i in range(0, n_perm, chunk)]) if n_perm > 0 else np.zeros(0)
            out["eo"] = _null_summary(observed, null, n_perm, len(x)) | {
                "chance_mean": float(null.mean()) if len(null) else nan,
                "permuted": f"correct-answer roles permuted among items within {' x '.join(cols) or 'all items'} "
                            f"({int(anchors.max()) + 1 if len(anchors) else 0} strata), {n_perm} permutations"}
    return out


def _null_summary(observed: float, null: np.ndarray, n_perm: int, n: int) -> dict[str, Any]:
    if len(null) == 0:
        return {"observed": observed, "chance_median": float("nan"), "chance_p90": float("nan"),
                "p_value": float("nan"), "n_perm": int(n_perm), "n": int(n)}
    return {"observed": observed, "chance_median": float(np.median(null)),
            "chance_p90": float(np.quantile(null, 0.9)),
            "p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null))), "n_perm": int(n_perm),
            "n": int(n)}
