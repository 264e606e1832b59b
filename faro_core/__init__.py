"""Faro: Fairness Aware Reward Optimization.

Pipeline (one subpackage per stage, imports point down only):
data -> models/train -> evaluate (metrics, certify) -> sweep -> policy -> report.
"""

from faro_core.errors import FaroError

__all__ = ["FaroError"]
__version__ = "0.1.0"
