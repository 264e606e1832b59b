"""Fairness of a reward model on preference pairs: the foundation that training, evaluation and sweeps share.

- :mod:`~faro_core.fairness.pairs`: group codes, batches of scored pairs, cell statistics.
- :mod:`~faro_core.fairness.constraints`: demographic parity, equalized odds and counterfactual fairness as
  cell statistics (strict and smooth violations, the coefficients of the linearised penalty).
- :mod:`~faro_core.fairness.constraint_set`: several constraints as one vector of one-sided constraints.
- :mod:`~faro_core.fairness.penalty`: the per-pair smooth terms the linearised penalty sums.
- :mod:`~faro_core.fairness.metrics`: accuracy and violations of one scored split.
- :mod:`~faro_core.fairness.chance`: the chance level of a DP / EO violation (group-permutation null).
"""

from faro_core.fairness.chance import chance_violation
from faro_core.fairness.constraint_set import CONSTRAINT_TYPES, ConstraintSet, all_constraints
from faro_core.fairness.constraints import KINDS, CounterfactualFairness, DemographicParity, EqualizedOdds
from faro_core.fairness.metrics import split_metrics
from faro_core.fairness.pairs import CellStats, GroupIndex, PairBatch, PairTensors

__all__ = ["CONSTRAINT_TYPES", "KINDS", "CellStats", "ConstraintSet", "CounterfactualFairness",
           "DemographicParity", "EqualizedOdds", "GroupIndex", "PairBatch", "PairTensors", "all_constraints",
           "chance_violation", "split_metrics"]
