"""Training methods: Faro and the baselines it is compared with (DESIGN §9), one registry entry each.

A :class:`Method` is a method's :class:`~faro_core.train.method_spec.MethodSpec` (name, label, colour, kinds,
constrained, fixed multipliers, oracle, grid expansion: what the rest of Faro needs to know, torch-free) plus
its behaviour: its per-pair example weights, its training loss when it is not Bradley-Terry (``loss``: a
factory of a :mod:`faro_core.train.losses` object), its post-processing of the final rewards, and a
replacement fit (a method that is not gradient descent on the trainer's loop). Adding a method is one spec in
:data:`~faro_core.train.method_spec.SPECS` and, if it behaves differently from Bradley-Terry, one entry in
:data:`BEHAVIOUR`; :data:`METHODS` joins the two.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from faro_core.fairness.attributes import attribute_strategy
from faro_core.train.method_spec import (  # noqa: F401 (re-exported: the registry's names, one import away)
    ALL_KINDS,
    BASELINES,
    CONFIG_METHODS,
    OTHER_COLOR,
    PRIMARY,
    REFERENCE,
    SPECS,
    MethodSpec,
    baselines,
    by_lambda,
    check_kinds,
    color,
    display_color,
    display_label,
    family_colors,
    identity,
    is_primary,
    is_reference,
    is_unconstrained,
    method_of,
)
from faro_core.train.method_spec import get as spec_of

if TYPE_CHECKING:  # type-only: this module is imported before torch and the trainer's modules are needed
    import torch

    from faro_core.store.runs import Run
    from faro_core.train.config import FaroConfig
    from faro_core.train.inputs import TrainInputs

def reweighing_weights(df: pd.DataFrame) -> torch.Tensor:
    """Pre-processing baseline (Kamiran & Calders reweighing): w(a, c) = P(a) P(c) / P(a, c), with a the
    pair's group and c the group the chosen response names, so that who wins is independent of the group.
    [N] weights, one per pair; the probabilities are estimated on the training split only (``c`` follows the
    observed label, so estimating them on every split let held-out labels into the training weights)."""
    a = df["group"].fillna("(none)").astype(str).to_numpy()
    c = df["chosen_group"].fillna("(none)").astype(str).to_numpy()
    train = (df["split"] == "train").to_numpy() if "split" in df else np.ones(len(df), dtype=bool)
    a_tr, c_tr = pd.Series(a[train]), pd.Series(c[train])
    pa = pd.Series(a).map(a_tr.value_counts(normalize=True))
    pc = pd.Series(c).map(c_tr.value_counts(normalize=True))
    pac = pd.Series(list(zip(a, c))).map(pd.Series(list(zip(a_tr, c_tr))).value_counts(normalize=True))
    # a (group, chosen group) combination absent from training has no training pair to weigh: weight 1
    w = ((pa * pc) / pac).fillna(1.0).to_numpy()
    import torch  # function-level: the registry is read where torch is not loaded (labels, colours)

    return torch.tensor(w, dtype=torch.float32)


def posthoc_shifts(df: pd.DataFrame, r_c: np.ndarray, r_r: np.ndarray,
                    scope: list[str] | None = None) -> dict[str, float]:
    """Post-processing baseline: per (group, stratum) additive shift that equalizes each group's mean
    *pair-centered* reward ((r_self - r_other) / 2) with its stratum's, estimated on the training split, in
    the strata DP applies to (``scope``; None: all). Raw rewards carry per-prompt offsets that Bradley-Terry
    never sees (see DemographicParity), so raw means would shift whole categories (docs/TRAINING.md)."""
    half = (np.asarray(r_c) - np.asarray(r_r)) / 2
    resp = pd.DataFrame({
        "g": list(df["chosen_group"]) + list(df["rejected_group"]),
        "s": list(df["stratum"]) * 2,
        "r": np.concatenate([half, -half]),
    }).dropna(subset=["g"])
    if scope is not None:
        resp = resp[resp["s"].isin(scope)]
    strat_mean = resp.groupby("s")["r"].mean()
    cell_mean = resp.groupby(["g", "s"])["r"].mean()
    return {f"{g}|{s}": float(strat_mean[s] - m) for (g, s), m in cell_mean.items()}


def apply_shifts(df: pd.DataFrame, r: np.ndarray, group_col: str, shifts: dict[str, float]) -> np.ndarray:
    """``r`` shifted by :func:`~faro_core.models.reward.shift_rewards`, each pair's group read from
    ``group_col`` and its stratum from ``stratum``."""
    from faro_core.models.reward import shift_rewards  # function-level: reward.py loads torch

    return shift_rewards(r, list(df[group_col]), list(df["stratum"]), shifts)


def _fit_expgrad(config: FaroConfig, run: Run, progress: bool, inputs: TrainInputs) -> None:
    # function-level import: expgrad pulls in scikit-learn and fairlearn, which only this method needs
    from faro_core.train.expgrad import fit_expgrad

    fit_expgrad(config, run, progress=progress, inputs=inputs)


def _posthoc(df: pd.DataFrame, r_c: np.ndarray, r_r: np.ndarray, dp_strata: list[str] | None
             ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Shift each response's reward by its (group, stratum) shift, estimated on the training split. Twins are
    left unshifted: the shift is keyed on the group a response names, which a swap changes."""
    tr = (df["split"] == "train").to_numpy()
    shifts = posthoc_shifts(df[tr], r_c[tr], r_r[tr], dp_strata)
    return (apply_shifts(df, r_c, "chosen_group", shifts), apply_shifts(df, r_r, "rejected_group", shifts),
            {"shifts": shifts})


def dro_groups(df: pd.DataFrame, config: FaroConfig) -> tuple[np.ndarray, list[str]]:
    """(group code per pair [N], group names) for group DRO: the run's attribute groups
    (:meth:`~faro_core.fairness.attributes.Attribute.dro_labels`: with ``attribute = "role"``, the role of
    the chosen response; else the pair's named group, pairs without one forming ``(none)``)."""
    g = attribute_strategy(config.attribute).dro_labels(df)
    codes, names = pd.factorize(g, sort=True)
    return codes.astype(np.int64), [str(n) for n in names]


def _group_dro_loss(config: FaroConfig, df: pd.DataFrame) -> Any:
    import torch

    from faro_core.train.backends import all_reduce_sum
    from faro_core.train.losses import GroupDROLoss

    codes, names = dro_groups(df, config)
    train = (df["split"] == "train").to_numpy() if "split" in df else np.ones(len(df), dtype=bool)
    present = torch.zeros(len(names), dtype=torch.bool)
    present[torch.from_numpy(np.unique(codes[train]))] = True
    return GroupDROLoss(torch.from_numpy(codes), len(names), eta=config.dro_eta, names=names, present=present,
                        reduce=all_reduce_sum)


def _alpha_fair_loss(config: FaroConfig, df: pd.DataFrame) -> Any:
    from faro_core.train.losses import AlphaFairLoss

    return AlphaFairLoss(alpha=config.fair_alpha, weight=config.fair_weight)


@dataclass(frozen=True)
class Method(MethodSpec):
    """One training method: its :class:`~faro_core.train.method_spec.MethodSpec` plus its behaviour (see the
    module docstring); a field left None is Bradley-Terry's (no weights, BT loss, no post-processing, the loop)."""

    example_weights: Callable[[pd.DataFrame], torch.Tensor] | None = None
    post_process: Callable[[pd.DataFrame, np.ndarray, np.ndarray, list[str] | None],
                           tuple[np.ndarray, np.ndarray, dict[str, Any]]] | None = None
    fit: Callable[[FaroConfig, Run, bool, TrainInputs], None] | None = None
    loss: Callable[[FaroConfig, pd.DataFrame], Any] | None = None


# The behaviour of each method that has any; every other field comes from its spec.
BEHAVIOUR: dict[str, dict[str, Callable[..., Any]]] = {
    "reweight": {"example_weights": reweighing_weights},
    "posthoc": {"post_process": _posthoc},
    "expgrad": {"fit": _fit_expgrad},
    "expgrad_head": {"fit": _fit_expgrad},
    "group_dro": {"loss": _group_dro_loss},
    "fair_reg": {"loss": _alpha_fair_loss},
}


def bind(spec: MethodSpec, **behaviour: Callable[..., Any]) -> Method:
    """The registry entry of ``spec`` with ``behaviour`` (:class:`Method`'s behaviour fields by name)."""
    return Method(**{f.name: getattr(spec, f.name) for f in fields(MethodSpec)}, **behaviour)


METHODS: dict[str, Method] = {name: bind(spec, **BEHAVIOUR.get(name, {})) for name, spec in SPECS.items()}


def get(method: str) -> Method:
    """The registry entry of ``method`` (a :data:`METHODS` key or a ``FaroConfig.method`` value)."""
    return METHODS[spec_of(method).name]
