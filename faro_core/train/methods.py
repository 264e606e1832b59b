"""Training methods: Faro and the baselines it is compared with (DESIGN §9), one registry entry each.

A :class:`Method` says everything the rest of Faro needs to know about a method: its label and colour
(tables, plots, reports; ``kind_colors`` where its constraint kinds are told apart), which constraint kinds
it takes and whether the run's constraints bind (``constrained``), whether its multipliers are fixed (``fixed_lambda``), its per-pair example weights, its
training loss when it is not Bradley-Terry (``loss``: a factory of a :mod:`faro_core.train.losses` object),
its post-processing of the final rewards, a replacement fit (a method that is not gradient descent on the
trainer's loop), whether it is an ``oracle`` (it reads what a deployed reward cannot know, so it is a
reference point, not a baseline to beat), and how a sweep grid expands it (``grid``: one run per seed, per (kind, lambda, seed) or per
(kind, epsilon, seed)). Adding a method is one entry in :data:`METHODS`.

``name`` is the sweep/table name; ``config_method`` the value of ``FaroConfig.method`` (``expgrad_head`` is
``method="expgrad"`` with ``expgrad_base="head"``, set by ``options``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from faro_core.errors import FaroError
from faro_core.fairness.kinds import KINDS

if TYPE_CHECKING:  # the config imports this module (for the list of methods); only its type is needed here
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
    add = np.array([shifts.get(f"{g}|{s}", 0.0) if g is not None else 0.0
                    for g, s in zip(df[group_col], df["stratum"])], dtype=np.float32)
    return r + add


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
    """(group code per pair [N], group names) for group DRO: the run's attribute groups. With
    ``attribute = "role"``, the role of the chosen response (``biased``, ``counter``, or ``unknown``:
    the pair's label says which answer is better, so a group is the pairs whose preferred answer plays
    that role); else the pair's named group (``group``), pairs without one forming ``(none)``."""
    if config.attribute == "role" and "chosen_role" in df:
        g = df["chosen_role"].fillna("unknown").astype(str)
    else:
        g = df["group"].fillna("(none)").astype(str) if "group" in df else pd.Series(["(none)"] * len(df))
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
class Method:
    """One training method (see the module docstring)."""

    name: str
    label: str
    description: str
    color: str
    kinds: tuple[str, ...] = ()
    constrained: bool = False
    config_method: str = ""
    options: tuple[tuple[str, object], ...] = ()
    fixed_lambda: bool = False
    head_constraint_batch: int = 0
    grid: str = "seed"
    example_weights: Callable[[pd.DataFrame], torch.Tensor] | None = None
    post_process: Callable[[pd.DataFrame, np.ndarray, np.ndarray, list[str] | None],
                           tuple[np.ndarray, np.ndarray, dict[str, Any]]] | None = None
    fit: Callable[[FaroConfig, Run, bool, TrainInputs], None] | None = None
    loss: Callable[[FaroConfig, pd.DataFrame], Any] | None = None
    oracle: bool = False
    # its head-mode runs can train as members of one batch (faro_core.train.batched): every per-run part of
    # the method lives in the TrainStepper (loss, weights, multipliers) and the loop; a ``fit`` never batches
    batches: bool = True
    kind_colors: tuple[tuple[str, str], ...] = ()  # a colour per constraint kind, where the kinds differ

    @property
    def method(self) -> str:
        """The ``FaroConfig.method`` value of this entry."""
        return self.config_method or self.name


ALL_KINDS = KINDS
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("faro", "Faro", "ProxyGDA: Bradley-Terry under DP / EO / CF constraints", "#1f77b4", ALL_KINDS,
           constrained=True, grid="epsilon", kind_colors=(("dp", "#1f77b4"), ("eo", "#2ca02c"), ("cf", "#9467bd"))),
    Method("bt", "BT", "unconstrained Bradley-Terry", "#7f7f7f"),
    Method("reweight", "Reweighting", "group reweighting of the loss (pre-processing)", "#ff7f0e",
           example_weights=reweighing_weights),
    Method("posthoc", "Post-hoc shift (oracle)", "per-group reward shift to equal means (post-processing); an "
           "oracle: it reads each response's group (with --attribute role, its stereotype role) when scoring, "
           "which a deployed reward does not know, so it is a reference point, not a baseline to dominate",
           "#8c564b", post_process=_posthoc, oracle=True),
    Method("fixed_lambda", "Fixed λ", "fixed-lambda penalty, no dual ascent", "#e377c2", ALL_KINDS,
           constrained=True, fixed_lambda=True, head_constraint_batch=1024, grid="lambda"),
    Method("select_only", "Selection only", "Faro's iterate selection (feasible on validation, else within "
           "chance, else least violating) with the multipliers held at 0: it trains BT's path and picks its "
           "iterate as Faro would, so against it Faro's gain is the penalty's, not the selection's", "#98df8a",
           ALL_KINDS, constrained=True, config_method="fixed_lambda",
           options=(("fixed_lambda", 0.0), ("constraint_batch_size", 0)), fixed_lambda=True, grid="epsilon"),
    Method("expgrad", "ExpGrad", "fairlearn ExponentiatedGradient, linear head", "#bcbd22", ("dp", "eo"),
           constrained=True, grid="epsilon", fit=_fit_expgrad),
    Method("expgrad_head", "ExpGrad (MLP head)", "fairlearn ExponentiatedGradient fitting Faro's MLP head",
           "#dbdb8d", ("dp", "eo"), constrained=True, config_method="expgrad", options=(("expgrad_base", "head"),),
           grid="epsilon", fit=_fit_expgrad),
    Method("group_dro", "Group DRO", "group DRO on the Bradley-Terry loss: the worst group's loss, group weights "
           "by exponentiated gradient (as in group-robust preference optimisation)", "#d62728",
           loss=_group_dro_loss),
    Method("fair_reg", "α-fair regulariser", "Bradley-Terry minus an alpha-fair utility of the batch's "
           "sigma(margins); no group labels (after Towards Reward Fairness in RLHF, ACL 2025)", "#393b79",
           loss=_alpha_fair_loss),
)}
CONFIG_METHODS = tuple(dict.fromkeys(m.method for m in METHODS.values()))  # valid values of FaroConfig.method

BASELINES = tuple(n for n in METHODS if n != "faro")


def baselines() -> tuple[str, ...]:
    """The baselines a sweep can add now: every entry of :data:`METHODS` but Faro."""
    return tuple(n for n in METHODS if n != "faro")
OTHER_COLOR = "#17becf"


def get(method: str) -> Method:
    """The registry entry of ``method`` (a :data:`METHODS` key or a ``FaroConfig.method`` value)."""
    if method not in METHODS:
        raise FaroError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method]


def method_of(cfg: dict[str, Any]) -> str:
    """The registry name of a stored config: its ``method``, refined by the entries' ``options``
    (``method="expgrad", expgrad_base="head"`` -> ``expgrad_head``)."""
    method = cfg.get("method") or "faro"
    for m in METHODS.values():
        if m.config_method == method and m.options and all(cfg.get(k) == v for k, v in m.options):
            return m.name
    return method


def color(method: str, kind: str = "") -> str:
    """The one colour of ``method`` (a registry name) in every figure; ``kind``: its first constraint kind,
    for a method whose kinds have their own colours (Faro-DP, Faro-EO, Faro-CF). Unknown: :data:`OTHER_COLOR`."""
    m = METHODS.get(method)
    if m is None:
        return OTHER_COLOR
    return dict(m.kind_colors).get(kind, m.color)
