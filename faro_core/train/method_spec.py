"""What a training method *is*, without what it *does*: one dependency-free :class:`MethodSpec` per method.

A spec names a method and says how the rest of Faro treats it: its label and colour (tables, plots, reports;
``kind_colors`` where its constraint kinds are told apart), which constraint kinds it takes and whether the
run's constraints bind (``constrained``), whether its multipliers are fixed (``fixed_lambda``), whether it is an
``oracle`` (it reads what a deployed reward cannot know, so it is a reference point, not a baseline to beat),
whether its head-mode runs batch, and how a sweep grid expands it (``grid``: one run per seed, per (kind,
lambda, seed) or per (kind, epsilon, seed): :data:`GRIDS`, :meth:`MethodSpec.configs`), what it is when no
constraint binds (``unconstrained_as``: Faro at epsilon = inf is BT), whether its family label names its kinds
(``label_kinds``), and which entries are the reference (``reference``: BT) and the primary method
(``primary``: Faro).

Every other module asks this one what a method is: :func:`identity` of a stored config, :func:`is_reference`,
:func:`is_primary`, :func:`display_label`, :func:`display_color`, :func:`family_colors`, :func:`run_name`,
:func:`by_lambda`, :func:`check_kinds`; none compares a method name to a string literal
(``tests/test_layering.py``).

This module imports nothing from Faro but the kinds' keys, so the config and ``faro --help`` read it without
torch. The behaviour (example weights, losses, post-processing, a replacement fit) binds to these specs in
:mod:`faro_core.train.methods`, whose :data:`~faro_core.train.methods.METHODS` is the registry the trainer uses.

``name`` is the sweep/table name; ``config_method`` the value of ``FaroConfig.method`` (``expgrad_head`` is
``method="expgrad"`` with ``expgrad_base="head"``, set by ``options``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
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
    # the method a run of this entry *is* when none of its constraints can bind (Faro with no constraint, or at
    # epsilon = inf, is BT: one method, two stored spellings, see :func:`identity`)
    unconstrained_as: str = ""
    # its family label names its constraint kinds (``Faro-DP+CF``), not just the method
    label_kinds: bool = False
    # the unconstrained reference every other method is compared with (paired differences, "vs BT")
    reference: bool = False
    # the method Faro proposes: a sweep grids it over kinds x epsilons x seeds; every other entry is a baseline
    primary: bool = False

    @property
    def method(self) -> str:
        """The ``FaroConfig.method`` value of this entry."""
        return self.config_method or self.name

    def configs(self, kinds: list[str], epsilons: list[float], lambdas: tuple[float, ...]
                ) -> list[dict[str, Any]]:
        """The config overrides of one seed of this entry in a sweep over ``kinds`` and ``epsilons`` (finite
        ones; none finite: 0.05), as its ``grid`` says (:data:`GRIDS`): method, options, constraints, epsilon,
        and the run name where the grid varies more than the seed."""
        base = {"method": self.method, **dict(self.options)}
        return [{**base, **o} for o in GRIDS[self.grid](self, kinds, epsilons, lambdas)]


def _grid_seed(m: MethodSpec, kinds: list[str], epsilons: list[float], lambdas: tuple[float, ...]
               ) -> list[dict[str, Any]]:
    return [{"constraints": [], "epsilon": math.inf}]


def _finite(epsilons: list[float]) -> list[float]:
    return [e for e in epsilons if math.isfinite(e)] or [0.05]


def _grid_lambda(m: MethodSpec, kinds: list[str], epsilons: list[float], lambdas: tuple[float, ...]
                 ) -> list[dict[str, Any]]:
    eps = min(_finite(epsilons))  # used only to select the iterate
    return [{"constraints": [k], "epsilon": eps, "fixed_lambda": lam, "name": f"{m.name}-{k}-lam{lam:g}"}
            for k in kinds if k in m.kinds for lam in lambdas]


def _grid_epsilon(m: MethodSpec, kinds: list[str], epsilons: list[float], lambdas: tuple[float, ...]
                  ) -> list[dict[str, Any]]:
    return [{"constraints": [k], "epsilon": e, "name": f"{m.name}-{k}-eps{e:g}"}
            for k in kinds if k in m.kinds for e in _finite(epsilons)]


# How a sweep expands one seed of a baseline (``MethodSpec.grid``): one run (``seed``: unconstrained), one per
# (kind it takes, fixed multiplier) (``lambda``), or one per (kind it takes, finite epsilon) (``epsilon``).
GRIDS = {"seed": _grid_seed, "lambda": _grid_lambda, "epsilon": _grid_epsilon}

ALL_KINDS = KINDS
SPECS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("faro", "Faro", "ProxyGDA: Bradley-Terry under DP / EO / CF constraints", "#1f77b4", ALL_KINDS,
               constrained=True, grid="epsilon",
               kind_colors=(("dp", "#1f77b4"), ("eo", "#2ca02c"), ("cf", "#9467bd")), unconstrained_as="bt",
               label_kinds=True, primary=True),
    MethodSpec("bt", "BT", "unconstrained Bradley-Terry", "#7f7f7f", reference=True),
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


class _ConfigMethods(Sequence[str]):
    """The valid values of ``FaroConfig.method``, read from :data:`SPECS` at each use (an entry added to it,
    a test's toy method included, is a valid method at once)."""

    def _names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.method for m in SPECS.values()))

    def __getitem__(self, i: Any) -> Any:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


CONFIG_METHODS: Sequence[str] = _ConfigMethods()  # valid values of FaroConfig.method

PRIMARY = next(n for n, m in SPECS.items() if m.primary)  # the method Faro proposes ("faro")
REFERENCE = next(n for n, m in SPECS.items() if m.reference)  # the unconstrained reference ("bt")
BASELINES = tuple(n for n, m in SPECS.items() if not m.primary)
OTHER_COLOR = "#17becf"


def baselines() -> tuple[str, ...]:
    """The baselines a sweep can add: every entry of :data:`SPECS` but the primary method (Faro)."""
    return tuple(n for n, m in SPECS.items() if not m.primary)


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


def is_unconstrained(cfg: dict[str, Any]) -> bool:
    """True when no constraint of a stored config can bind: it names none, or its epsilon is infinite (JSON
    stores inf as null). Whether its method uses constraints at all is the spec's ``constrained``."""
    cons = [c for c in (cfg.get("constraints") or []) if c]
    eps = cfg.get("epsilon")
    return not cons or eps is None or not math.isfinite(float(eps))


def identity(cfg: dict[str, Any]) -> str:
    """The registry name of the method a stored config trains: :func:`method_of`, except that an entry with
    ``unconstrained_as`` and no constraint that can bind is that method (``faro`` at epsilon = inf is ``bt``).
    An unknown method is returned as spelled."""
    name = method_of(cfg)
    m = SPECS.get(name)
    if m is not None and m.unconstrained_as and is_unconstrained(cfg):
        return m.unconstrained_as
    return name


def is_reference(cfg: dict[str, Any]) -> bool:
    """True when a stored config trains the reference method (BT, in either spelling)."""
    return identity(cfg) == REFERENCE


def is_primary(cfg: dict[str, Any]) -> bool:
    """True when a stored config trains the primary method (Faro) under a constraint that can bind."""
    return identity(cfg) == PRIMARY


def display_label(cfg: dict[str, Any]) -> str:
    """The family label of a stored config on screen: its method's label, with its constraint kinds where the
    spec says so (``BT``, ``Faro-DP``, ``Faro-DP+CF``, ``Fixed λ``); an unknown method as spelled."""
    name = identity(cfg)
    m = SPECS.get(name)
    if m is None:
        return name
    if m.label_kinds:
        return m.label + "-" + "+".join(str(c).upper() for c in (cfg.get("constraints") or []) if c)
    return m.label


def display_color(cfg: dict[str, Any]) -> str:
    """The colour of a stored config in every figure: :func:`color` of its :func:`identity` and first kind."""
    name = identity(cfg)
    cons = [c for c in (cfg.get("constraints") or []) if c]
    return color(name, str(cons[0]) if cons and name in SPECS and SPECS[name].kind_colors else "")


def run_name(method: str, constraints: list[str], epsilon: float, active: list[str]) -> str:
    """The default run name (the run id's prefix) of a ``FaroConfig.method`` under ``constraints`` at
    ``epsilon``, of which ``active`` can bind: ``bt`` for a method that is BT with none binding (either
    spelling), ``faro-dp+cf-eps0.05`` for the primary method's kinds, ``<method>-eps<eps>`` for another
    method given constraints, else ``<method>``. Run ids hash the name: this rule is frozen."""
    m = SPECS.get(method)
    tag = method
    if m is not None and m.unconstrained_as and not active:
        tag = m.unconstrained_as
    elif m is not None and m.label_kinds:
        tag = method + "-" + "+".join(constraints)
    return f"{tag}-eps{epsilon:g}" if constraints and tag != REFERENCE else tag


def family_colors() -> dict[str, str]:
    """Every family label and family key the registry produces (``BT``, ``Faro-DP+CF``, ``faro-dp``,
    ``Fixed λ``, ``fixed_lambda-eo``; each method's kinds in every combination) -> its colour: names are made
    forward from the specs and looked up, never parsed back into a method."""
    out: dict[str, str] = {}
    for m in SPECS.values():
        out.setdefault(m.label, m.color)
        combos = [[]] + [list(c) for r in range(1, len(m.kinds) + 1) for c in itertools.permutations(m.kinds, r)]
        for cons in combos:
            cfg = {"method": m.method, **dict(m.options), "constraints": cons, "epsilon": 0.05 if cons else None}
            out.setdefault(display_label(cfg), display_color(cfg))
            # a family key is the method as configured: faro's colour even unconstrained (the key ``faro``)
            out.setdefault(m.name + ("-" + ",".join(cons) if cons else ""), color(m.name, cons[0] if len(cons) == 1
                                                                                   else ""))
    return out


def by_lambda(method: str) -> bool:
    """True when a method's runs are told apart by their fixed multiplier, not by epsilon (its ``grid`` is
    ``lambda``); False for an unknown name."""
    m = SPECS.get(method)
    return m is not None and m.grid == "lambda"


def check_kinds(method: str, constraints: list[str]) -> None:
    """FaroError (one line) when ``method`` (a registry name) cannot train under one of ``constraints``."""
    m = get(method)
    bad = [k for k in constraints if m.constrained and k not in m.kinds]
    if bad:
        raise FaroError(f"method {m.name} does not support constraint {bad[0]!r}; it supports "
                        f"{', '.join(m.kinds)} (--constraint)")


def color(method: str, kind: str = "") -> str:
    """The one colour of ``method`` (a registry name) in every figure; ``kind``: its first constraint kind,
    for a method whose kinds have their own colours (Faro-DP, Faro-EO, Faro-CF). Unknown: :data:`OTHER_COLOR`."""
    m = SPECS.get(method)
    if m is None:
        return OTHER_COLOR
    return dict(m.kind_colors).get(kind, m.color)
