"""Training configuration (TRL-style config object; stored whole in each run's ``config.json``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from faro_core.errors import FaroError
from faro_core.train.methods import METHODS, config_methods

# Config fields added after runs were stored, with the value that reproduces the older behaviour: a stored
# config without the field ran that way (so a resumed old run keeps its rule), and run ids leave the field out
# at that value (so finished sweeps keep their ids; faro_core.studies.grid.HASH_OPTIONAL).
LEGACY_DEFAULTS: dict[str, object] = {"average": 0.0, "dp_partner": False, "select_chance": 0.0,
                                      "expgrad_base": "linear", "select_metric": "accuracy",
                                      "attribute": "group", "role_columns": None}
ATTRIBUTES = ("group", "role")
# The embedded demo keeps the named group until its build and first screen are redone on the role (#15, the
# demo item): its sweep, tests and Overview are written for group DP. Every other BBQ-format source: role.
DEMO_ATTRIBUTE = "group"
MODES = ("head", "full")


@dataclass
class FaroConfig:
    """Everything needed to (re)run one reward-model training.

    Data: ``data`` (source; None = embedded demo), ``format``, ``attribute`` (DP/EO's sensitive attribute:
    ``"group"``, the named group, or ``"role"``, the response's stereotype role, see
    :mod:`faro_core.fairness.role`; None: role on BBQ-format data, else group), ``role_columns`` (a table's
    own (chosen, rejected) role columns; None: ``chosen_role`` / ``rejected_role`` or derived from BBQ answer
    indices), ``group`` (pair-level sensitive column),
    ``strata`` (None: the source's default), ``dp_scope`` (where DP holds: ``"COLUMN=V1|V2"`` over a strata
    column, ``"all"``, or None: ambiguous contexts on BBQ-style data, else all), ``dp_partner`` (True: DP
    compares responses against the same kind of partner, one naming no group or one naming a group; False:
    pooled, the definition before 2026-11-27; why: :class:`~faro_core.fairness.constraints.DemographicParity`), ``groups`` (keep only these group values), ``skew`` (rho),
    ``data_seed`` (skew and split; kept fixed across training seeds so seeds are comparable).
    Fairness: ``constraints`` (subset of dp/eo/cf), ``epsilon`` (slack, inf = unconstrained),
    ``min_count`` (cells smaller than this are not estimated), ``temperature`` (proxy sharpness per kind).
    Method: ``faro`` (ProxyGDA) or a baseline: ``bt``, ``reweight``, ``posthoc``, ``fixed_lambda``, ``expgrad``;
    ``expgrad_base`` (the model fairlearn's reduction fits each round: ``"linear"``, logistic regression on
    feature differences, or ``"head"``, the same head as Faro's, see :mod:`faro_core.train.expgrad`).
    Model: ``mode`` head|full, ``backbone`` (None = embedded MiniLM), ``head_hidden`` (0 = linear head).
    Optimisation: ``epochs``, ``batch_size`` (pairs in the Bradley-Terry batch; the linearized constraint
    penalty is estimated on the same batch), ``constraint_batch_size`` (extra pairs drawn each step for the
    constraint terms; default 0, 1,024 for the fixed-lambda hinge in head mode), ``lr``, ``dual_lr``
    (eta_lambda), ``dual_every`` (dual step every N steps on the whole training split's statistics, read from
    the buffer of each pair's latest rewards), ``lambda_max`` (cap on each multiplier; None = no cap),
    ``ema`` (momentum of running sums of dual statistics; 0: the buffer alone), ``eval_every`` (steps; 0 =
    each epoch), ``ckpt_every`` (steps),
    ``select`` ("best": best validation accuracy among feasible iterates, else among iterates whose DP/EO
    violations are indistinguishable from chance, else least violating; "last"), ``select_chance`` (the
    p-value at or above which a DP/EO violation on validation counts as chance, see
    :mod:`faro_core.fairness.chance`; 0 turns that middle tier off), ``select_metric`` (what ranks iterates
    within a tier: ``"accuracy"`` on validation, or ``"loss"``, the validation Bradley-Terry loss; measured
    in :class:`faro_core.train.selection.IterateSelector`),
    ``average`` (0: off; else the per-step decay of an exponential moving average of the weights, evaluated
    on validation each epoch as one more candidate for ``select``; constrained runs only).
    """

    name: str | None = None
    data: str | None = None
    format: str | None = None
    attribute: str | None = None
    role_columns: list[str] | None = None
    group: str | None = None
    strata: list[str] | None = None
    dp_scope: str | None = None
    dp_partner: bool = True
    groups: list[str] | None = None
    skew: float = 0.0
    data_seed: int = 0
    val_frac: float = 0.15
    test_frac: float = 0.15
    constraints: list[str] = field(default_factory=list)
    epsilon: float = 0.05
    min_count: int = 30
    temperature: dict[str, float] | None = None
    method: str = "faro"
    fixed_lambda: float = 1.0
    expgrad_base: str = "linear"
    mode: str = "head"
    backbone: str | None = None
    head_hidden: int = 256
    max_length: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    constraint_batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    dual_lr: float = 0.1
    ema: float = 0.0
    dual_signal: str = "auto"
    lambda_max: float | None = 0.3
    dual_every: int | None = None
    dual_source: str = "auto"
    eval_every: int = 0
    ckpt_every: int = 50
    select: str = "best"
    select_chance: float = 0.05
    select_metric: str = "accuracy"
    average: float = 0.0
    seed: int = 0
    sweep: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.constraints, str):
            self.constraints = [c for c in self.constraints.split(",") if c and c != "none"]
        self.constraints = [c.strip().lower() for c in self.constraints if c.strip().lower() != "none"]
        if self.method not in config_methods():
            raise FaroError(f"unknown method {self.method!r}; choose from {', '.join(config_methods())}")
        if self.attribute is not None and self.attribute not in ATTRIBUTES:
            raise FaroError(f"unknown attribute {self.attribute!r}; choose group or role")
        if isinstance(self.role_columns, str):
            self.role_columns = [c.strip() for c in self.role_columns.split(",") if c.strip()]
        if self.mode not in MODES:
            raise FaroError(f"unknown mode {self.mode!r}; choose head or full")
        if self.epsilon is None:  # JSON stores inf as null
            self.epsilon = math.inf
        if isinstance(self.epsilon, str):
            self.epsilon = float(self.epsilon)
        if not (self.epsilon >= 0):
            raise FaroError(f"--epsilon must be >= 0 (or inf), got {self.epsilon}")
        if not 0 <= self.skew <= 1:
            raise FaroError(f"--skew must be in [0, 1], got {self.skew}")
        if self.dual_source not in ("auto", "exact", "buffer"):
            raise FaroError("dual_source must be 'auto', 'exact' or 'buffer'")
        if self.expgrad_base not in ("linear", "head"):
            raise FaroError(f"expgrad_base must be 'linear' or 'head', got {self.expgrad_base!r}")
        if self.select not in ("best", "last"):
            raise FaroError("select must be 'best' or 'last'")
        if self.select_metric not in ("accuracy", "loss"):
            raise FaroError(f"select_metric must be 'accuracy' or 'loss', got {self.select_metric!r}")
        if not 0.0 <= float(self.select_chance) < 1.0:
            raise FaroError(f"select_chance must be in [0, 1), got {self.select_chance}")

    # Mode-dependent defaults, resolved at train time so the stored config shows what ran.
    def resolved(self) -> FaroConfig:
        head = self.mode == "head"
        defaults = {
            "epochs": 50 if head else 1,
            "batch_size": 128 if head else 32,
            # the linearized penalty is unbiased on the BT batch; only the fixed-lambda hinge needs more
            "constraint_batch_size": METHODS[self.method].head_constraint_batch if head else 0,
            "dual_every": 20 if head else 5,
            "lr": 3e-3 if head else 3e-5,
            "max_length": 256 if head else 128,
        }
        out = FaroConfig(**self.to_dict())
        if out.attribute is None:
            out.attribute = default_attribute(out.data, out.format, out.role_columns)
        for k, v in defaults.items():
            if getattr(out, k) is None:
                setattr(out, k, v)
        if out.name is None:
            tag = "bt" if out.method == "faro" and not out.active_constraints else out.method
            if out.method == "faro" and out.active_constraints:
                tag = "faro-" + "+".join(out.constraints)
            out.name = f"{tag}-eps{out.epsilon:g}" if out.constraints and tag != "bt" else tag
        return out

    @property
    def active_constraints(self) -> list[str]:
        """Constraints that can bind: none when epsilon is infinite or the method ignores them."""
        if not METHODS[self.method].constrained or not math.isfinite(self.epsilon):
            return []
        return list(self.constraints)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaroConfig:
        """A stored config; a field it lacks (added later) takes the value that reproduces how it ran."""
        names = {f.name for f in fields(cls)}
        legacy = {k: v for k, v in LEGACY_DEFAULTS.items() if k not in d}
        return cls(**{**legacy, **{k: v for k, v in d.items() if k in names}})


def default_attribute(data: str | None, format: str | None = None, role_columns: list[str] | None = None) -> str:
    """The attribute a config that names none gets: ``"role"`` on BBQ-format data (format ``bbq``, or a path
    detected as BBQ) and on a table that names its role columns, :data:`DEMO_ATTRIBUTE` on the embedded demo,
    else ``"group"``. Detection reads the source's first record (no network: a hub id that is not a local path
    counts as not BBQ-format)."""
    from pathlib import Path

    if role_columns:
        return "role"
    fmt = format
    if data is None or str(data) == "demo" or fmt == "demo":
        return DEMO_ATTRIBUTE
    if fmt is None:
        if not Path(str(data)).exists():
            return "group"
        from faro_core.data import detect_format

        try:
            fmt = detect_format(data)
        except FaroError:
            return "group"
    return "role" if fmt in ("bbq", "demo") else "group"
