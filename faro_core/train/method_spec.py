"""What a training method *is*, without what it *does*: one dependency-free :class:`MethodSpec` per method.

A spec names a method and says how the rest of Faro treats it: its label and colour (tables, plots, reports;
``kind_colors`` where its constraint kinds are told apart), which constraint kinds it takes and whether the
run's constraints bind (``constrained``), whether its multipliers are fixed (``fixed_lambda``), whether it is an
``oracle`` (it reads what a deployed reward cannot know, so it is a reference point, not a baseline to beat),
whether its head-mode runs batch, and how a sweep grid expands it (``grid``: one run per seed, per (kind,
lambda, seed) or per (kind, epsilon, seed)).

This module imports nothing from Faro but the kinds' keys, so the config and ``faro --help`` read it without
torch. The behaviour (example weights, losses, post-processing, a replacement fit) binds to these specs in
:mod:`faro_core.train.methods`, whose :data:`~faro_core.train.methods.METHODS` is the registry the trainer uses.

``name`` is the sweep/table name; ``config_method`` the value of ``FaroConfig.method`` (``expgrad_head`` is
``method="expgrad"`` with ``expgrad_base="head"``, set by ``options``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faro_core.errors import FaroError
from faro_core.fairness.kinds import KINDS


@dataclass(frozen=True)
class MethodSpec:
    """One training method's identity and treatment (see the module docstring)."""

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
SPECS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("faro", "Faro", "ProxyGDA: Bradley-Terry under DP / EO / CF constraints", "#1f77b4", ALL_KINDS,
               constrained=True, grid="epsilon",
               kind_colors=(("dp", "#1f77b4"), ("eo", "#2ca02c"), ("cf", "#9467bd"))),
    MethodSpec("bt", "BT", "unconstrained Bradley-Terry", "#7f7f7f"),
    MethodSpec("reweight", "Reweighting", "group reweighting of the loss (pre-processing)", "#ff7f0e"),
    MethodSpec("posthoc", "Post-hoc shift (oracle)", "per-group reward shift to equal means (post-processing); an "
               "oracle: it reads each response's group (with --attribute role, its stereotype role) when scoring, "
               "which a deployed reward does not know, so it is a reference point, not a baseline to dominate",
               "#8c564b", oracle=True),
    MethodSpec("fixed_lambda", "Fixed λ", "fixed-lambda penalty, no dual ascent", "#e377c2", ALL_KINDS,
               constrained=True, fixed_lambda=True, head_constraint_batch=1024, grid="lambda"),
    MethodSpec("select_only", "Selection only", "Faro's iterate selection (feasible on validation, else within "
               "chance, else least violating) with the multipliers held at 0: it trains Faro's path before its "
               "multipliers rise (Faro's batches: whole items under a role constraint, else BT's) and picks its "
               "iterate as Faro would, so against it Faro's gain is the penalty's, not the selection's",
               "#98df8a", ALL_KINDS, constrained=True, config_method="fixed_lambda",
               options=(("fixed_lambda", 0.0), ("constraint_batch_size", 0)), fixed_lambda=True, grid="epsilon"),
    MethodSpec("expgrad", "ExpGrad", "fairlearn ExponentiatedGradient, linear head", "#bcbd22", ("dp", "eo"),
               constrained=True, grid="epsilon"),
    MethodSpec("expgrad_head", "ExpGrad (MLP head)", "fairlearn ExponentiatedGradient fitting Faro's MLP head",
               "#dbdb8d", ("dp", "eo"), constrained=True, config_method="expgrad",
               options=(("expgrad_base", "head"),), grid="epsilon"),
    MethodSpec("group_dro", "Group DRO", "group DRO on the Bradley-Terry loss: the worst group's loss, group "
               "weights by exponentiated gradient (as in group-robust preference optimisation)", "#d62728"),
    MethodSpec("fair_reg", "α-fair regulariser", "Bradley-Terry minus an alpha-fair utility of the batch's "
               "sigma(margins); no group labels (after Towards Reward Fairness in RLHF, ACL 2025)", "#393b79"),
)}
CONFIG_METHODS = tuple(dict.fromkeys(m.method for m in SPECS.values()))  # valid values of FaroConfig.method

BASELINES = tuple(n for n in SPECS if n != "faro")
OTHER_COLOR = "#17becf"


def baselines() -> tuple[str, ...]:
    """The baselines a sweep can add: every entry of :data:`SPECS` but Faro."""
    return tuple(n for n in SPECS if n != "faro")


def get(method: str) -> MethodSpec:
    """The spec of ``method`` (a :data:`SPECS` key or a ``FaroConfig.method`` value)."""
    if method not in SPECS:
        raise FaroError(f"unknown method {method!r}; choose from {', '.join(SPECS)}")
    return SPECS[method]


def method_of(cfg: dict[str, Any]) -> str:
    """The registry name of a stored config: its ``method``, refined by the entries' ``options``
    (``method="expgrad", expgrad_base="head"`` -> ``expgrad_head``)."""
    method = cfg.get("method") or "faro"
    for m in SPECS.values():
        if m.config_method == method and m.options and all(cfg.get(k) == v for k, v in m.options):
            return m.name
    return method


def color(method: str, kind: str = "") -> str:
    """The one colour of ``method`` (a registry name) in every figure; ``kind``: its first constraint kind,
    for a method whose kinds have their own colours (Faro-DP, Faro-EO, Faro-CF). Unknown: :data:`OTHER_COLOR`."""
    m = SPECS.get(method)
    if m is None:
        return OTHER_COLOR
    return dict(m.kind_colors).get(kind, m.color)
