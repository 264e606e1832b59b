"""Point metrics of one scored split: accuracy, gold accuracy, the violation of every kind, feasibility.

Shared by the trainer (validation passes, ``metrics.json``) and evaluation (:mod:`faro_core.evaluate.metrics`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from faro_core.fairness.constraint_set import ConstraintSet
from faro_core.fairness.constraints import cf_flip_rate
from faro_core.fairness.pairs import PairBatch
from faro_core.models.reward import bt_loss


def split_metrics(batch: PairBatch, constraints: ConstraintSet, measure: ConstraintSet,
                  gold: torch.Tensor, strict: torch.Tensor | None = None) -> dict[str, Any]:
    """Accuracy (observed and gold), violations of every kind, feasibility of the trained constraints.
    ``strict``: ``constraints.strict(batch)`` where the caller has computed it already."""
    d = batch.r_chosen - batch.r_rejected
    out: dict[str, Any] = {"pairs": len(batch), "accuracy": float((d > 0).float().mean()),
                           "loss": float(bt_loss(batch.r_chosen, batch.r_rejected))}
    g_mask = ~torch.isnan(gold)
    if bool(g_mask.any()):
        correct = torch.where(gold[g_mask] == 1, d[g_mask] > 0, d[g_mask] < 0)
        out["gold_accuracy"] = float(correct.float().mean())
    out["violation"] = split_violations(batch, measure)
    if constraints:
        g = constraints.strict(batch) if strict is None else strict
        out["max_excess"] = float((g - constraints.epsilons()).max())
        out["feasible"] = bool((g <= constraints.epsilons() + 1e-9).all())
    else:
        out["max_excess"], out["feasible"] = 0.0, True
    flip = cf_flip_rate(batch)
    if not math.isnan(flip):
        out["cf_flip_rate"] = flip
    return out


def split_violations(batch: PairBatch, measure: ConstraintSet) -> dict[str, float]:
    """The strict violation of every kind in ``measure`` on ``batch`` (its largest one-sided value), from one
    pass of cell statistics (``ConstraintSet.strict``'s); a kind with no estimable cell has none."""
    with torch.no_grad():
        stats = measure.cell_stats(batch, smooth=False)
        vals = measure.values(stats)
    viol = measure.max_by_kind(vals)
    for c, s in zip(measure.constraints, stats):
        _, ok = c.disparities(s)
        if not bool(ok.any()):
            viol.pop(c.kind, None)
    return viol
