"""Reward models and the frozen-feature cache."""

from faro_core.models.features import FeatureCache, pair_text, resolve_backbone
from faro_core.models.reward import HeadRewardModel, RewardScorer, load_scorer, load_sequence_classifier

__all__ = ["FeatureCache", "HeadRewardModel", "RewardScorer", "load_scorer", "load_sequence_classifier",
           "pair_text", "resolve_backbone"]
