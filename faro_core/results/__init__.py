"""Results: what the run store holds, as tables, fronts, per-run views, figures and the report.

- :mod:`~faro_core.results.table`: run tables (sweep table, run table), families, seed aggregates.
- :mod:`~faro_core.results.pareto`: Pareto fronts, hypervolume, the front's points, the headline numbers.
- :mod:`~faro_core.results.views`: per-run frames (scores, rewards by group, calibration, history, policy).
- :mod:`~faro_core.results.plots`: plotly figures (one colour per method, from the method registry).
- :mod:`~faro_core.results.report`: the self-contained HTML report.

The names of the first three are re-exported here (``from faro_core import results; results.run_table(store)``).
"""

from faro_core.fairness.kinds import KIND_LABEL, KINDS
from faro_core.results.pareto import (
    HV_REF_ACCURACY,
    HV_REF_VIOLATION,
    constraint_fronts,
    headline,
    hypervolume,
    pareto_front,
    pareto_mask,
    pareto_points,
    pareto_summary,
    sweep_points,
)
from faro_core.results.table import (
    CONSTRAINED_METHODS,
    aggregate,
    best_split,
    certificate_summary,
    config_columns,
    cross_violations,
    family_key,
    family_label,
    markdown_table,
    method_label,
    metrics_row,
    run_table,
    split_columns,
    table_row,
)
from faro_core.results.views import (
    MissingFile,
    bias_gap,
    chance_lines,
    generations_side_by_side,
    group_accuracy,
    group_summary,
    history_frame,
    load_scores,
    need,
    policy_frame,
    presented_probabilities,
    reliability,
    response_rewards,
    role_margins,
    role_rewards,
    selected_run,
    top_multipliers,
    with_group_captions,
)

__all__ = [
    "CONSTRAINED_METHODS", "HV_REF_ACCURACY", "HV_REF_VIOLATION", "KINDS", "KIND_LABEL", "MissingFile", "aggregate",
    "best_split", "bias_gap", "certificate_summary", "chance_lines", "config_columns", "constraint_fronts",
    "cross_violations", "family_key", "family_label", "generations_side_by_side", "group_accuracy", "group_summary",
    "headline", "history_frame", "hypervolume", "load_scores", "markdown_table", "method_label", "metrics_row",
    "need", "pareto_front", "pareto_mask", "pareto_points", "pareto_summary", "policy_frame",
    "presented_probabilities", "reliability", "response_rewards", "role_margins", "role_rewards", "run_table",
    "selected_run", "split_columns", "sweep_points", "table_row", "top_multipliers", "with_group_captions",
]
