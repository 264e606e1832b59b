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

With ``expgrad_base="head"`` the model fitted each round is the same head as Faro's (an MLP reward r on
features, ``head_hidden`` units), as a pair classifier P(y1 > y2) = sigma(r(phi1) - r(phi2)) trained by weighted
Bradley-Terry on the round's relabelled, reweighted pairs (:class:`PairHeadClassifier`: same optimiser, batch,
learning rate and epochs as a Faro head run). That compares the two fairness methods on one model class
(the linear head is a weaker model: docs/EVALUATION.md). The mixture
sum_t q_t r_t of MLP heads is again one MLP head, with the rounds' hidden units side by side
(:func:`mixture_head`), so the result is still an ordinary reward model.

The run gets the same files as the trainer writes: scores.parquet, metrics.json, model.safetensors
(a :class:`HeadRewardModel`: ``hidden=0`` for the linear base), model.json, constraints.json, data.json.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from faro_core.errors import FaroError
from faro_core.fairness.constraint_set import ConstraintSet, all_constraints
from faro_core.fairness.pairs import PairTensors
from faro_core.models.reward import HeadRewardModel
from faro_core.store.runs import Run
from faro_core.train.backends import HeadBackend, split_rewards
from faro_core.train.config import FaroConfig
from faro_core.train.inputs import TrainInputs, split_indices
from faro_core.train.optim import make_adam
from faro_core.train.outputs import data_record, split_metrics_of, write_scores

MAX_ITER = 30
LR_C = 1.0


def _fairlearn_constraint(kinds: list[str], epsilon: float) -> Any:
    from fairlearn.reductions import DemographicParity, EqualizedOdds

    if len(kinds) != 1 or kinds[0] not in ("dp", "eo"):
        raise FaroError(f"expgrad takes exactly one constraint, dp or eo (got {kinds or 'none'})")
    eps = epsilon if math.isfinite(epsilon) else 1.0
    return (DemographicParity if kinds[0] == "dp" else EqualizedOdds)(difference_bound=eps)


class PairHeadClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn classifier over pairs whose decision is a reward difference: X [n, 2d] holds the two
    responses' features side by side (phi1 | phi2), and ``predict`` says whether r(phi1) > r(phi2) for a
    :class:`~faro_core.models.reward.HeadRewardModel` r fitted by weighted Bradley-Terry (binary cross-entropy
    on r(phi1) - r(phi2) against y, weights ``sample_weight``). What fairlearn's reduction needs of an
    estimator: ``fit(X, y, sample_weight)``, ``predict(X)`` and cloning (``BaseEstimator``'s ``get_params``).

    Parameters: ``hidden`` (units; 0 = linear), ``epochs``, ``batch_size`` (pairs), ``lr`` (Adam), ``seed``.
    """

    def __init__(self, hidden: int = 256, epochs: int = 10, batch_size: int = 128, lr: float = 3e-3,
                 seed: int = 0) -> None:
        self.hidden, self.epochs, self.batch_size, self.lr, self.seed = hidden, epochs, batch_size, lr, seed

    @staticmethod
    def _split(X: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] % 2:
            raise FaroError(f"PairHeadClassifier needs [n, 2d] features (two responses side by side), got {tuple(x.shape)}")
        d = x.shape[1] // 2
        return x[:, :d], x[:, d:]

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> PairHeadClassifier:
        x1, x2 = self._split(X)
        n = len(x1)
        target = torch.as_tensor(np.asarray(y, dtype=np.float32).reshape(-1))
        w = torch.ones(n) if sample_weight is None else torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
        w = w * (n / w.sum().clamp_min(1e-12))  # mean weight 1: the learning rate means what it means for Faro
        gen = torch.Generator().manual_seed(int(self.seed))
        torch.manual_seed(int(self.seed))
        self.model_ = HeadRewardModel(x1.shape[1], int(self.hidden))
        opt = make_adam(self.model_.parameters(), lr=float(self.lr))  # Faro's optimizer: a like-for-like fit
        bs = max(1, min(int(self.batch_size), n))
        for _ in range(int(self.epochs)):
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, bs):
                b = perm[i:i + bs]
                logit = self.model_(torch.cat([x1[b], x2[b]])).view(2, -1)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logit[0] - logit[1], target[b],
                                                                            weight=w[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.classes_ = np.array([0, 1])
        return self

    @torch.no_grad()
    def decision_function(self, X: Any) -> np.ndarray:
        """r(phi1) - r(phi2) [n]."""
        x1, x2 = self._split(X)
        return (self.model_(x1) - self.model_(x2)).numpy()

    def predict(self, X: Any) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)


def mixture_head(heads: list[torch.nn.Module], weights: list[float]) -> torch.nn.Module:
    """One :class:`HeadRewardModel` whose reward is sum_t w_t r_t(x) for MLP heads r_t of equal width: the
    hidden layers side by side (hidden = width x T), the output weights scaled by w_t, the biases summed."""
    if not heads or len(heads) != len(weights):
        raise FaroError("mixture_head needs one weight per head and at least one head")
    first = heads[0].net
    out = HeadRewardModel(first[0].in_features, first[0].out_features * len(heads))
    with torch.no_grad():
        out.net[0].weight.copy_(torch.cat([h.net[0].weight for h in heads]))
        out.net[0].bias.copy_(torch.cat([h.net[0].bias for h in heads]))
        out.net[2].weight.copy_(torch.cat([w * h.net[2].weight for h, w in zip(heads, weights)], dim=1))
        out.net[2].bias.copy_(sum(w * h.net[2].bias for h, w in zip(heads, weights)))
    return out


def fit_expgrad(config: FaroConfig, run: Run, progress: bool = False, inputs: TrainInputs | None = None) -> None:
    """Fit the ExponentiatedGradient baseline for ``config`` and write ``run``'s files."""
    from fairlearn.reductions import ExponentiatedGradient
    from sklearn.linear_model import LogisticRegression

    if config.mode != "head":
        raise FaroError("expgrad works on head-mode features only (--mode head)")
    constraint = _fairlearn_constraint(list(config.constraints), config.epsilon)
    t0 = time.perf_counter()
    inputs = inputs or TrainInputs()
    data, df, index = inputs.load(config)
    tens = PairTensors.from_frame(df, index)
    split_idx = split_indices(df)
    backend = HeadBackend(replace(config, head_hidden=0), df, progress, feature_cache=inputs.feature_cache)
    tr = split_idx["train"].numpy()
    if len(tr) == 0:
        raise FaroError("the training split is empty")
    flip = tens.order.numpy()[tr].astype(bool)
    y = (~flip).astype(int)  # 1: y1 is the observed chosen response
    sens = df["group"].fillna("(none)").astype(str).to_numpy()[tr]
    head_base = config.expgrad_base == "head" and config.head_hidden > 0
    if head_base:
        c, r = backend.x_c[tr].numpy(), backend.x_r[tr].numpy()
        X = np.where(flip[:, None], np.hstack([r, c]), np.hstack([c, r]))  # (y1 | y2)
        est: Any = PairHeadClassifier(hidden=config.head_hidden, epochs=int(config.epochs),
                                      batch_size=int(config.batch_size), lr=float(config.lr), seed=config.seed)
    else:
        diff = (backend.x_c[tr] - backend.x_r[tr]).numpy().astype(np.float64)
        X = np.where(flip[:, None], -diff, diff)
        est = LogisticRegression(C=LR_C, fit_intercept=False, max_iter=300)
    eg = ExponentiatedGradient(est, constraints=constraint, max_iter=MAX_ITER)
    eg.fit(X, y, sensitive_features=sens)
    used = [(float(q), pred) for q, pred in zip(eg.weights_.to_numpy(), eg.predictors_) if q > 0]
    if head_base:
        model = mixture_head([pred.model_ for _, pred in used], [q for q, _ in used])
        backend.meta = {**backend.meta, "hidden": int(model.hidden)}
    else:
        w = np.zeros(X.shape[1])
        for q, pred in used:
            coef = getattr(pred, "coef_", None)
            if coef is not None:
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
    run.write("data.json", data_record(data, split_idx, backend))
    rewards = tuple(t.numpy() for t in split_rewards(backend, model, torch.arange(len(df))))
    write_scores(run, df, tens, rewards)
    backend.export(run, model)
    run.write("model.json", {**backend.meta, "expgrad": {"iterations": int(len(eg.weights_)),
                                                         "support": int((eg.weights_ > 0).sum()),
                                                         "max_iter": MAX_ITER, "C": LR_C,
                                                         "base": "head" if head_base else "linear"}})

    def metrics_for(split: str) -> dict[str, Any]:
        return split_metrics_of(df, tens, split_idx[split], rewards, constraints, measure)

    metrics = {**metrics_for("val"), "split": "val", "selected_step": int(len(eg.weights_)),
               "steps": int(len(eg.weights_)), "test": metrics_for("test"), "train": metrics_for("train"),
               "constraints": config.active_constraints,
               "epsilon": config.epsilon if math.isfinite(config.epsilon) else None, "method": "expgrad",
               "seconds": round(time.perf_counter() - t0, 3)}
    run.write("metrics.json", metrics)
    run.set_progress(1, 1)
