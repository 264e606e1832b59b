"""The constraint set: DP, EO and CF composed into one vector of one-sided constraints g [m] (g <= eps).

``ConstraintSet.parse("dp,cf", epsilon, index, min_count, temperature)`` builds one; ``strict(batch)`` /
``proxy(batch)`` give g [m] (indicator / smooth statistics), ``fix_cells(full)`` fixes from the training
split which cells are large enough and their counts, ``pair_coefficients(pairs, lam)`` gives the per-pair
coefficients of the linearised penalty (:mod:`faro_core.fairness.penalty`), ``max_by_kind(g)`` the reported
violation per kind. :func:`all_constraints` measures every kind at epsilon 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from faro_core.errors import FaroError
from faro_core.fairness.attributes import attribute_strategy
from faro_core.fairness.constraints import (
    DEFAULT_MIN_COUNT,
    Constraint,
    CounterfactualFairness,
    DemographicParity,
    EqualizedOdds,
)
from faro_core.fairness.pairs import CellStats, GroupIndex, PairBatch
from faro_core.fairness.role_constraint import RoleOdds, RoleParity

CONSTRAINT_TYPES: dict[str, type[Constraint]] = {
    "dp": DemographicParity,
    "eo": EqualizedOdds,
    "cf": CounterfactualFairness,
}
# Every constraint class an attribute's ``constraint_classes`` may name (fairness.attributes sits below them).
CONSTRAINT_CLASSES: dict[str, type[Constraint]] = {
    c.__name__: c for c in (DemographicParity, EqualizedOdds, CounterfactualFairness, RoleParity, RoleOdds)}


class ConstraintSet:
    """Several constraints composed (e.g. DP and CF): one vector of one-sided constraints.

    ``epsilon = inf`` drops a constraint (it can never bind), which is what makes ``--epsilon inf``
    *exactly* plain Bradley-Terry.
    """

    def __init__(self, constraints: list[Constraint]) -> None:
        self.constraints = [c for c in constraints if math.isfinite(c.epsilon)]

    @classmethod
    def parse(cls, spec: str | list[str] | None, epsilon: float | dict[str, float], index: GroupIndex,
              min_count: int = DEFAULT_MIN_COUNT, temperature: dict[str, float] | None = None) -> ConstraintSet:
        """Build from ``"dp,cf"`` (or a list); ``none``/empty gives no constraint."""
        kinds = spec.split(",") if isinstance(spec, str) else list(spec or [])
        kinds = [k.strip().lower() for k in kinds if k and k.strip().lower() not in ("none", "")]
        out = []
        for k in kinds:
            if k not in CONSTRAINT_TYPES:
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
    """The constraint class of each kind for the index's attribute, as its strategy names them
    (:attr:`faro_core.fairness.attributes.Attribute.constraint_classes`: DP and EO by named group, or by
    stereotype role; CF by named group either way), in the order the strategy gives."""
    named = attribute_strategy(index.attribute).constraint_classes
    return {k: CONSTRAINT_CLASSES[c] if isinstance(c, str) else c for k, c in named.items()}


def all_constraints(index: GroupIndex, min_count: int = DEFAULT_MIN_COUNT) -> ConstraintSet:
    """DP, EO and CF with epsilon 0: used to *measure* every violation, whatever was trained."""
    return ConstraintSet([cls(epsilon=0.0, min_count=min_count).bind(index)
                          for cls in constraint_types(index).values()])
