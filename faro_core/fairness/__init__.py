"""Fairness of a reward model on preference pairs: the foundation that training, evaluation and sweeps share.

- :mod:`~faro_core.fairness.pairs`: group codes, batches of scored pairs, cell statistics.
- :mod:`~faro_core.fairness.constraints`: demographic parity, equalized odds and counterfactual fairness as
  cell statistics (strict and smooth violations, the coefficients of the linearised penalty).
- :mod:`~faro_core.fairness.constraint_set`: several constraints as one vector of one-sided constraints.
- :mod:`~faro_core.fairness.penalty`: the per-pair smooth terms the linearised penalty sums.
- :mod:`~faro_core.fairness.metrics`: accuracy and violations of one scored split.
- :mod:`~faro_core.fairness.chance`: the chance level of a DP / EO violation (group-permutation null).
- :mod:`~faro_core.fairness.role`: the stereotype-role attribute (``--attribute role``) and its constraints.
- :mod:`~faro_core.fairness.kinds`: the notions' keys and names (no torch).

The names below load their module on first use (tables that only need :data:`KINDS` do not import torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "chance_violation": "chance", "CONSTRAINT_TYPES": "constraint_set", "ConstraintSet": "constraint_set",
    "all_constraints": "constraint_set", "CounterfactualFairness": "constraints", "DemographicParity": "constraints",
    "EqualizedOdds": "constraints", "KINDS": "kinds", "KIND_LABEL": "kinds", "split_metrics": "metrics",
    "CellStats": "pairs", "GroupIndex": "pairs", "PairBatch": "pairs", "PairTensors": "pairs",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"faro_core.fairness.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'faro_core.fairness' has no attribute {name!r}")
