"""Baselines (DESIGN §9), all trained by :func:`faro_core.train.train` into the same run store and
evaluated by the same code as Faro.

=================  ===============================================================================
``bt``             unconstrained Bradley-Terry
``reweight``       pre-processing: Kamiran-Calders reweighing of the BT loss (group x chosen group)
``posthoc``        post-processing: per (group, stratum) additive reward shift to equal means
``fixed_lambda``   fixed-multiplier penalty lambda * (proxy - eps), no dual ascent
``expgrad``        fairlearn ExponentiatedGradient on head-mode features, logistic regression each round
                   (:mod:`faro_core.train.expgrad`)
``expgrad_head``   the same reduction fitting Faro's MLP head each round (like-for-like model class;
                   ~30 head trainings per run)
=================  ===============================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from faro_core.errors import FaroError
from faro_core.train.config import FaroConfig


@dataclass(frozen=True)
class Baseline:
    """A baseline method: ``kinds`` are the constraint kinds it takes (empty: it ignores constraints)."""

    method: str
    description: str
    kinds: tuple[str, ...] = ()
    options: tuple[tuple[str, object], ...] = ()  # config fields the baseline sets besides ``method``


BASELINES: dict[str, Baseline] = {
    "bt": Baseline("bt", "unconstrained Bradley-Terry"),
    "reweight": Baseline("reweight", "group reweighting of the loss (pre-processing)"),
    "posthoc": Baseline("posthoc", "per-group reward shift to equal means (post-processing)"),
    "fixed_lambda": Baseline("fixed_lambda", "fixed-lambda penalty, no dual ascent", ("dp", "eo", "cf")),
    "expgrad": Baseline("expgrad", "fairlearn ExponentiatedGradient, linear head", ("dp", "eo")),
    "expgrad_head": Baseline("expgrad", "fairlearn ExponentiatedGradient fitting Faro's MLP head", ("dp", "eo"),
                             (("expgrad_base", "head"),)),
}
FIXED_LAMBDAS = (1.0, 5.0)


def parse_baselines(spec: str | list[str] | None) -> list[str]:
    """``"bt,expgrad"`` / ``"all"`` / ``"none"`` -> list of baseline names (validated)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or [])
    names = [n.strip().lower() for n in names if n and n.strip() and n.strip().lower() != "none"]
    if names == ["all"]:
        return list(BASELINES)
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise FaroError(f"unknown baseline(s) {bad}; choose from all, {', '.join(BASELINES)}")
    return names


def baseline_configs(base: FaroConfig, names: list[str], kinds: list[str], epsilons: list[float],
                     seeds: list[int], fixed_lambdas: tuple[float, ...] = FIXED_LAMBDAS) -> list[FaroConfig]:
    """Configs of the baselines ``names`` on ``base``'s data/model settings.

    Unconstrained baselines: one run per seed. ``fixed_lambda``: one run per (kind, lambda, seed), its
    epsilon (used only to select the iterate) is the smallest of ``epsilons``. ``expgrad``: one run per
    (kind it supports, epsilon, seed).
    """
    d = base.to_dict()
    d.pop("name", None)
    out: list[FaroConfig] = []
    finite = [e for e in epsilons if math.isfinite(e)] or [0.05]
    for name in names:
        b = BASELINES[name]
        for seed in seeds:
            if not b.kinds:
                out.append(FaroConfig(**{**d, "method": name, "constraints": [], "epsilon": math.inf,
                                         "seed": seed}))
            elif name == "fixed_lambda":
                for k in kinds:
                    for lam in fixed_lambdas:
                        out.append(FaroConfig(**{**d, "method": name, "constraints": [k], "epsilon": min(finite),
                                                 "fixed_lambda": lam, "seed": seed,
                                                 "name": f"fixed_lambda-{k}-lam{lam:g}"}))
            else:
                for k in kinds:
                    if k not in b.kinds:
                        continue
                    for eps in finite:
                        out.append(FaroConfig(**{**d, "method": b.method, **dict(b.options), "constraints": [k],
                                                 "epsilon": eps, "seed": seed, "name": f"{name}-{k}-eps{eps:g}"}))
    return out
