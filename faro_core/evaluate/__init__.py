"""Evaluation of trained reward models: metrics with bootstrap intervals, certificates, audits (DESIGN §6-§7)."""

from faro_core.evaluate.certify import certify, certify_run
from faro_core.evaluate.metrics import evaluate_frame, evaluate_run, load_split, scores_for_data

__all__ = ["certify", "certify_run", "evaluate_frame", "evaluate_run", "load_split", "scores_for_data"]
