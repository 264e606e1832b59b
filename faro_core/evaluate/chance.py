"""Chance level of a measured DP / EO violation: what a reward whose selections ignore the group would show.

A DP or EO violation is the *largest* gap over many small cells, so sampling noise alone makes it positive.
On BBQ's validation split (cells of 30-80 responses, ~16 of them) a reward whose selections are independent
of the group still measures a DP violation near 0.09: the reported 0.05 slack is then below chance and a
held-out violation at or under it says little. This module measures that floor on the very batch evaluated.

Null: group labels are permuted among the members of each anchor (DP: stratum x partner kind, among
responses that name a group; EO: stratum x true label, among pairs with a group and a label), the reward's
selections are kept. Cell sizes, anchors and selection rates are those of the batch, so the permuted
violations are the violations of "the same selections, handed out at random across groups".

Caveat: permuting single responses treats them as independent. BBQ's items come from templates, and a
reward's errors cluster by template, so the true chance level is somewhat higher than this one (the
returned ``chance_median`` is a lower bound on the floor, and ``p_value`` is anti-conservative).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from faro_core.constraints import (
    Constraint,
    ConstraintSet,
    DemographicParity,
    EqualizedOdds,
    GroupIndex,
    PairBatch,
)

PERMUTED_KINDS = ("dp", "eo")  # CF is not a between-group gap: no group-permutation null


def _permute_within(codes: np.ndarray, keys: np.ndarray, eligible: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """``codes`` with the eligible entries shuffled among entries of the same key."""
    out = codes.copy()
    for k in np.unique(keys[eligible]):
        at = np.flatnonzero(eligible & (keys == k))
        out[at] = codes[at][rng.permutation(len(at))]
    return out


def _permuted_dp(batch: PairBatch, rng: np.random.Generator) -> PairBatch:
    n = len(batch)
    g = torch.cat([batch.chosen_group, batch.rejected_group]).numpy()
    partner = torch.cat([batch.rejected_group, batch.chosen_group]).numpy()
    stratum = torch.cat([batch.stratum, batch.stratum]).numpy()
    keys = stratum * 2 + (partner >= 0)
    # only group-naming responses are shuffled, so every partner keeps its kind and every response its anchor
    p = torch.as_tensor(_permute_within(g, keys, g >= 0, rng))
    return replace(batch, chosen_group=p[:n], rejected_group=p[n:])


def _permuted_eo(batch: PairBatch, rng: np.random.Generator) -> PairBatch:
    label = batch.label.numpy()
    ok = (batch.group.numpy() >= 0) & ~np.isnan(label)
    y = np.where(batch.order.numpy() == 1, 1.0 - np.nan_to_num(label), np.nan_to_num(label)).astype(np.int64)
    keys = batch.stratum.numpy() * 2 + y
    return replace(batch, group=torch.as_tensor(_permute_within(batch.group.numpy(), keys, ok, rng)))


def _largest(c: Constraint, batch: PairBatch) -> float:
    """Largest one-sided strict violation over the estimable cells; NaN when no cell is estimable."""
    with torch.no_grad():
        d, ok = c.disparities(c.cell_stats(batch, smooth=False))
    return float(d[ok].abs().max()) if bool(ok.any()) else float("nan")


def chance_violation(batch: PairBatch, index: GroupIndex, kinds: list[str] | tuple[str, ...] = PERMUTED_KINDS,
                     min_count: int = 30, n_perm: int = 200, seed: int = 0) -> dict[str, dict[str, Any]]:
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
        observed = _largest(c, batch)
        permute = _permuted_dp if isinstance(c, DemographicParity) else _permuted_eo
        assert isinstance(c, DemographicParity | EqualizedOdds)
        null = np.array([_largest(c, permute(batch, rng)) for _ in range(int(n_perm))])
        if np.isnan(observed) or not len(null):
            out[kind] = {"observed": observed, "chance_median": float("nan"), "chance_p90": float("nan"),
                         "p_value": float("nan"), "n_perm": int(n_perm)}
            continue
        out[kind] = {"observed": observed, "chance_median": float(np.median(null)),
                     "chance_p90": float(np.quantile(null, 0.9)),
                     "p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null))),
                     "n_perm": int(n_perm)}
    return out
