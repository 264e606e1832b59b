"""Faro: Fairness Aware Reward Optimization.

Pipeline, one subpackage per stage (imports point down the layers, docs/ARCHITECTURE.md):
data -> models -> fairness -> store -> train -> evaluate -> policy -> results -> studies -> cli.
"""

from faro_core.errors import FaroError

__all__ = ["FaroError"]
__version__ = "0.1.0"
