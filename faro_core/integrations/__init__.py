"""Faro inside the tools reward-model users already run: exported models (transformers, sentence-transformers)
with model cards, and a drop-in for TRL's ``RewardTrainer`` (:mod:`faro_core.integrations.trl`)."""
