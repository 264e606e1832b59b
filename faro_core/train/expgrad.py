"""Baseline: fairlearn ``ExponentiatedGradient`` on head-mode features (DESIGN §9).

A linear Bradley-Terry head r(x, y) = w . phi(x, y) is logistic regression on feature differences:
P(y1 > y2) = sigma(w . (phi1 - phi2)). Each training pair is shown in its fixed random order (the EO order
bit), so the classifier sees both classes; the label is 1 when y1 is the observed chosen response.
The sensitive feature is the pair group. fairlearn's reduction (Agarwal et al. 2018) returns a randomized
mixture of classifiers with weights q_t; we combine their linear predictors into one head,
w = sum_t q_t w_t (no intercept: an intercept on a difference would break r1 - r2 = -(r2 - r1)),
so the result is an ordinary reward model. Constraints: ``dp`` -> fairlearn ``DemographicParity``, ``eo`` ->
``EqualizedOdds`` with ``difference_bound = epsilon`` (fairlearn's own pairwise-prediction notions, on the
observed labels; Faro measures its own DP/EO on the result like for any run). ``cf`` is not supported.

The run gets the same files as the trainer writes: scores.parquet, metrics.json, model.safetensors
(a :class:`HeadRewardModel` with ``hidden=0``), model.json, constraints.json, data.json.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from faro_core.constraints import ConstraintSet, all_constraints
from faro_core.errors import FaroError
from faro_core.runs import Run
from faro_core.train.config import FaroConfig

MAX_ITER = 30
LR_C = 1.0


def _fairlearn_constraint(kinds: list[str], epsilon: float) -> Any:
    from fairlearn.reductions import DemographicParity, EqualizedOdds

    if len(kinds) != 1 or kinds[0] not in ("dp", "eo"):
        raise FaroError(f"expgrad takes exactly one constraint, dp or eo (got {kinds or 'none'})")
    eps = epsilon if math.isfinite(epsilon) else 1.0
    return (DemographicParity if kinds[0] == "dp" else EqualizedOdds)(difference_bound=eps)


def fit_expgrad(config: FaroConfig, run: Run, progress: bool = False) -> None:
    """Fit the ExponentiatedGradient baseline for ``config`` and write ``run``'s files."""
    from fairlearn.reductions import ExponentiatedGradient
    from sklearn.linear_model import LogisticRegression

    from faro_core.train.trainer import (
        SPLITS,
        HeadBackend,
        PairTensors,
        _split_rewards,
        load_training_data,
        split_metrics,
        write_scores,
    )

    if config.mode != "head":
        raise FaroError("expgrad works on head-mode features only (--mode head)")
    constraint = _fairlearn_constraint(list(config.constraints), config.epsilon)
    t0 = time.perf_counter()
    data, df, index = load_training_data(config)
    tens = PairTensors.from_frame(df, index)
    split_idx = {s: torch.from_numpy(np.flatnonzero((df["split"] == s).to_numpy())) for s in SPLITS}
    backend = HeadBackend(replace(config, head_hidden=0), df, progress)
    tr = split_idx["train"].numpy()
    if len(tr) == 0:
        raise FaroError("the training split is empty")
    flip = tens.order.numpy()[tr].astype(bool)
    diff = (backend.x_c[tr] - backend.x_r[tr]).numpy().astype(np.float64)
    X = np.where(flip[:, None], -diff, diff)
    y = (~flip).astype(int)  # 1: y1 is the observed chosen response
    sens = df["group"].fillna("(none)").astype(str).to_numpy()[tr]
    est = LogisticRegression(C=LR_C, fit_intercept=False, max_iter=300)
    eg = ExponentiatedGradient(est, constraints=constraint, max_iter=MAX_ITER)
    eg.fit(X, y, sensitive_features=sens)
    w = np.zeros(X.shape[1])
    for q, pred in zip(eg.weights_.to_numpy(), eg.predictors_):
        coef = getattr(pred, "coef_", None)
        if coef is not None and q > 0:
            w += q * np.asarray(coef).reshape(-1)
    model = backend.model
    with torch.no_grad():
        model.net[0].weight.copy_(torch.as_tensor(w, dtype=torch.float32).reshape(1, -1))
        model.net[0].bias.zero_()

    constraints = ConstraintSet.parse(config.active_constraints, config.epsilon, index, config.min_count,
                                      config.temperature or None)
    measure = all_constraints(index, config.min_count)
    run.write("constraints.json", {"names": constraints.names(), "epsilon": constraints.epsilons().tolist(),
                                   "index": index.to_dict()})
    run.write("data.json", {"name": data.name, "meta": data.meta, "strata": data.strata,
                            "pairs": {s: int(len(v)) for s, v in split_idx.items()}, "groups": data.groups(),
                            "response_groups": data.response_groups(), "feature_seconds": backend.feature_seconds,
                            "encoded": backend.encoded})
    r_c, r_r, cf_c, cf_r = (t.numpy() for t in _split_rewards(backend, model, torch.arange(len(df))))
    write_scores(run, df, tens, (r_c, r_r, cf_c, cf_r))
    backend.export(run, model)
    run.write("model.json", {**backend.meta, "expgrad": {"iterations": int(len(eg.weights_)),
                                                         "support": int((eg.weights_ > 0).sum()),
                                                         "max_iter": MAX_ITER, "C": LR_C}})
    has_gold = df["gold"].notna().any()

    def metrics_for(split: str) -> dict[str, Any]:
        idx = split_idx[split]
        if len(idx) == 0:
            return {}
        rw = tuple(torch.from_numpy(np.asarray(a)[idx.numpy()]).float() for a in (r_c, r_r, cf_c, cf_r))
        gold = tens.label[idx] if has_gold else torch.full((len(idx),), float("nan"))
        return split_metrics(tens.batch(idx, rw), constraints, measure, gold)

    metrics = {**metrics_for("val"), "split": "val", "selected_step": int(len(eg.weights_)),
               "steps": int(len(eg.weights_)), "test": metrics_for("test"), "train": metrics_for("train"),
               "constraints": config.active_constraints,
               "epsilon": config.epsilon if math.isfinite(config.epsilon) else None, "method": "expgrad",
               "seconds": round(time.perf_counter() - t0, 3)}
    run.write("metrics.json", metrics)
    run.set_progress(1, 1)
