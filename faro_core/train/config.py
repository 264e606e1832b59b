"""Training configuration: every setting of one reward-model training, defined once.

Each :class:`FaroConfig` field carries, as dataclass field metadata (the way TRL's configs carry their help),
its help text, its valid range or choices, its CLI flag, where it depends on the mode its head/full defaults,
and its classification: whether it is hashed into the run id, whether the members of one batch share it, which
dashboard form shows it, and whether ``FairRewardConfig`` has it (:func:`setting`). From that one definition:

- ``faro train`` / ``faro sweep`` generate their flags (:mod:`faro_core.cli.config_flags`);
- ``faro train --config FILE`` reads a JSON config (what the launcher writes) through :func:`migrate_config`;
- the dashboard's Train and Data pages render the widgets :mod:`faro_core.train.forms` describes;
- run ids hash :data:`RUN_ID_FIELDS` and the :data:`LEGACY_DEFAULTS` fields off their legacy value;
- :data:`faro_core.train.batched.BATCH_KEYS` and ``FairRewardConfig``'s Faro fields are generated;
- construction validates every field, so a value out of range is one :class:`FaroError` line everywhere
  (exit 2 on the CLI, ``st.error`` on the dashboard, an exception before any process starts in the launcher).

Stored configs (``config.json``) carry ``config_version``; :func:`migrate_config` reads any older one.

**Adding a field** ``x``: declare it below with :func:`setting` (help, range or choices) and its
classification. If runs stored before it behaved as if ``x`` had another value ``v``, classify it
``run_id=Legacy(v)``: old configs read ``x = v`` and keep their run ids (``x`` is hashed only when it differs
from ``v``). ``run_id=HASHED`` for a field that changes what is trained and has no legacy value changes every
run id: avoid. A field without its classification fails at import (:func:`check_classified`;
``tests/test_settings.py``).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from faro_core.errors import FaroError
from faro_core.fairness.attributes import attribute_names
from faro_core.fairness.kinds import KINDS
from faro_core.train.method_spec import (  # torch-free: faro --help is fast
    CONFIG_METHODS,
    SPECS,
    check_kinds,
    method_of,
    run_name,
)

CONFIG_VERSION = 2  # 1: configs stored before config_version existed (read as version 1)
MODES = ("head", "full")
ATTRIBUTES = attribute_names()  # the registered strategies (faro_core.fairness.attributes), torch-free
# Every BBQ-format source defaults to the stereotype role, the embedded demo included.
DEMO_ATTRIBUTE = "role"  # the embedded demo (a BBQ subset): its first screen is DP on the stereotype role
# The 512-item mini demo holds ~38 ambiguous held-out items, too few for role rates; it stays the named-group
# example (and the data the trainer-mechanics tests were measured on).
MINI_DEMO_ATTRIBUTE = "group"

HASHED, UNHASHED = "hashed", "unhashed"  # a field's ``run_id`` classification (or a :class:`Legacy`)
SHOWN_ON = ("train", "data", None)  # a field's ``show``: the dashboard page whose form shows it, or none
CLASSIFICATION = ("run_id", "batch", "show")  # what every field's metadata must say (:func:`check_classified`)


@dataclass(frozen=True)
class Legacy:
    """A field added after runs were stored: ``value`` reproduces the older behaviour. A stored config without
    the field reads it as ``value`` (a resumed old run keeps its rule), and run ids leave the field out at
    ``value`` (finished sweeps keep their ids)."""

    value: Any


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval ``lo .. hi`` (None: unbounded on that side)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        if isinstance(v, float) and math.isnan(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return "a number"


POSITIVE = Range(0, None, lo_open=True)
NON_NEGATIVE = Range(0, None)
AT_LEAST_1 = Range(1, None)
UNIT = Range(0, 1)
UNIT_OPEN = Range(0, 1, hi_open=True)


def setting(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING,
            range: Range | None = None, choices: tuple[str, ...] | None = None,
            by_mode: dict[str, Any] | None = None, flag: str | None = None, aliases: tuple[str, ...] = (),
            none_word: str | None = None, words: dict[str, Any] | None = None, sweep: bool = True,
            by_split: dict[str, Any] | None = None, run_id: str | Legacy, batch: bool, show: str | None,
            label: str = "", widget: str | None = None, labels: dict[str, str] | None = None,
            trl: dict[str, Any] | None = None) -> Any:
    """A :class:`FaroConfig` field with its contract.

    ``help``: one line for ``--help`` and the dashboard; ``range``/``choices``: the valid values (None is valid
    for an optional field); ``by_mode``: the value a None default resolves to per mode (``resolved()``);
    ``flag``: the CLI flag (default ``--name-with-dashes``), ``aliases``: more flags; ``none_word``: the word
    that sets None on the CLI; ``words``: CLI words mapped to values (``--dp-partner split|pool``);
    ``sweep``: also a flag of ``faro sweep`` (False for what the sweep grid itself sets); ``by_split``: the
    value a None default resolves to per split unit kind (item, template, column).

    Its classification (keyword-only, no default: a field that does not say is an error):

    - ``run_id``: :data:`HASHED` (always in the run id), :data:`UNHASHED` (tags a run without changing what is
      trained) or ``Legacy(v)`` (added after runs were stored; hashed only off ``v``, see :class:`Legacy`);
    - ``batch``: shared by every member of one batch (:data:`faro_core.train.batched.BATCH_KEYS`: one feature
      table, one head shape, one optimizer, one step schedule);
    - ``show``: the dashboard form showing it (``"train"``, ``"data"``, or None), with its ``label`` there,
      ``widget`` (the kind, where not implied by the type: ``radio``, or ``source`` / ``groups`` that the page
      builds from its own state) and ``labels`` (words shown for ``words``/``choices``;
      :mod:`faro_core.train.forms`);
    - ``trl``: also a field of ``FairRewardConfig`` (:mod:`faro_core.integrations.trl`), with the TRL-facing
      ``name``, ``default`` and ``help`` where they differ (None: not one).
    """
    md = {"help": help, "range": range, "choices": choices, "by_mode": by_mode, "flag": flag,
          "aliases": aliases, "none_word": none_word, "words": words, "sweep": sweep, "by_split": by_split,
          "run_id": run_id, "batch": batch, "show": show, "label": label, "widget": widget, "labels": labels,
          "trl": trl}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


@dataclass
class FaroConfig:
    """Everything needed to (re)run one reward-model training; each field's contract is its ``setting``.

    Data fields select and split the preference data, fairness fields the constraints and their slack, method
    fields Faro (ProxyGDA) or a baseline, model and optimisation fields the reward model and its training.
    Fields whose default is None and that have ``by_mode`` defaults are filled per mode by :meth:`resolved`,
    so the stored config shows what ran.
    """

    # --- data -------------------------------------------------------------------------------------------
    name: str | None = setting(None, "run name, the prefix of the run id (default: from method, kinds, eps)",
                               sweep=False, run_id=HASHED, batch=False, show=None)
    data: str | None = setting(None, "source: 'demo' (default), a BBQ folder, a CSV/JSONL/Parquet file, or a "
                               "hub id", run_id=HASHED, batch=True, show="data", label="Source",
                               widget="source")
    format: str | None = setting(None, "bbq|crows|hh|trl|csv|jsonl|parquet|demo (default: detected from the "
                                 "source)", run_id=HASHED, batch=True, show=None)
    attribute: str | None = setting(None, "DP/EO's sensitive attribute: 'group' (the group a response names) or "
                                    "'role' (its stereotype role: biased, counter, or neither) (default: role on "
                                    "BBQ-format data, else group; see faro_core.fairness.role)",
                                    choices=ATTRIBUTES, run_id=Legacy("group"), batch=True, show="data",
                                    label="Sensitive attribute for DP and EO", widget="radio",
                                    trl={"default": "group"})
    role_columns: list[str] | None = setting(None, "a table's own CHOSEN,REJECTED columns with each response's "
                                             "role (values biased / counter; default chosen_role,rejected_role, "
                                             "or derived from BBQ answer indices)", run_id=Legacy(None),
                                             batch=True, show=None, trl={})
    group: str | None = setting(None, "column holding the pair-level sensitive attribute", run_id=HASHED,
                                batch=True, show="data",
                                label="Group column (pair-level sensitive attribute)",
                                trl={"name": "attribute_column", "default": "group"})
    strata: list[str] | None = setting(None, "comma-separated conditioning columns (default: the source's)",
                                       run_id=HASHED, batch=True, show="data",
                                       label="Strata columns (comma-separated)",
                                       trl={"name": "strata_columns", "help": "conditioning columns (default: "
                                            "none; with attribute=role, context_condition where present)"})
    dp_scope: str | None = setting(None, "where DP holds: COLUMN=V1|V2 over a strata column, or 'all' "
                                   "(default: BBQ-style data context_condition=ambig, else all)",
                                   run_id=HASHED, batch=True, show="data",
                                   label="Where demographic parity applies (COLUMN=V1|V2, or 'all')", trl={})
    dp_partner: bool = setting(True, "DP compares a response's selection against partners of the same kind, "
                               "naming no group or naming one ('split'), or pools both ('pool'; "
                               "docs/DEFINITIONS.md)", words={"split": True, "pool": False},
                               run_id=Legacy(False), batch=True, show="data",
                               label="Demographic parity compares each answer's win rate against",
                               labels={"split": "answers with the same kind of opponent",
                                       "pool": "all answers, pooled"},
                               trl={})
    groups: list[str] | None = setting(None, "comma-separated group values to keep", run_id=HASHED,
                                       batch=True, show="data", label="Groups", widget="groups")
    skew: float = setting(0.0, "fraction rho of ambiguous items relabelled to the biased answer", range=UNIT,
                          run_id=HASHED, batch=True, show="data",
                          label="Skew ρ: share of ambiguous BBQ items relabelled to the stereotyped answer")
    data_seed: int = setting(0, "seed of skew injection and splits (fixed across training seeds)",
                             range=NON_NEGATIVE, run_id=HASHED, batch=True, show=None)
    split_by: str | None = setting(None, "unit no two splits share: template (BBQ's category x question_index: "
                                   "the test split holds templates the model never saw), item, or column:NAME "
                                   "(default: template on BBQ-format data, else item)", run_id=Legacy("item"),
                                   batch=True, show=None)
    val_frac: float | None = setting(None, "fraction of split units (items, templates, ...) in the validation "
                                     "split", range=UNIT_OPEN, by_split={"item": 0.15, "template": 0.2,
                                                                         "column": 0.2}, run_id=HASHED,
                                     batch=True, show=None)
    test_frac: float | None = setting(None, "fraction of split units in the test split", range=UNIT_OPEN,
                                      by_split={"item": 0.15, "template": 0.2, "column": 0.2}, run_id=HASHED,
                                      batch=True, show=None)
    # --- fairness ---------------------------------------------------------------------------------------
    constraints: list[str] = setting(default_factory=list, help="none|dp|eo|cf, or several: dp,cf",
                                     choices=KINDS, flag="--constraint", none_word="none", sweep=False,
                                     run_id=HASHED, batch=False, show=None, trl={})
    epsilon: float = setting(0.05, "slack eps of every constraint (inf: none)", range=NON_NEGATIVE, sweep=False,
                             run_id=HASHED, batch=False, show=None, trl={})
    min_count: int = setting(30, "cells with fewer training members are not constrained", range=AT_LEAST_1,
                             run_id=HASHED, batch=False, show=None, trl={})
    temperature: dict[str, float] | None = setting(
        None, "proxy sharpness per kind, e.g. dp=0.25,cf=0.1 (default: each constraint's own)",
        range=POSITIVE, none_word="none", run_id=HASHED, batch=False, show=None)
    # --- method -----------------------------------------------------------------------------------------
    method: str = setting("faro", "faro (ProxyGDA) or a baseline", choices=CONFIG_METHODS, sweep=False,
                          run_id=HASHED, batch=False, show=None)
    fixed_lambda: float = setting(1.0, "multiplier of the fixed_lambda baseline", range=NON_NEGATIVE,
                                  sweep=False, run_id=HASHED, batch=False, show=None)
    expgrad_base: str = setting("linear", "model the expgrad baseline fits each round: linear (logistic "
                                "regression on feature differences) or head (the same MLP head as Faro's)",
                                choices=("linear", "head"), sweep=False, run_id=Legacy("linear"), batch=False,
                                show=None)
    dro_eta: float = setting(0.05, "group_dro baseline: step of the exponentiated-gradient group weights "
                             "(faro_core.train.losses)", range=POSITIVE, run_id=Legacy(0.05), batch=False,
                             show=None)
    fair_alpha: float = setting(2.0, "fair_reg baseline: alpha of the alpha-fair utility of sigma(margin) "
                                "(1: BT only; larger: closer to max-min)", range=NON_NEGATIVE,
                                run_id=Legacy(2.0), batch=False, show=None)
    fair_weight: float = setting(1.0, "fair_reg baseline: weight lambda of the alpha-fair utility",
                                 range=NON_NEGATIVE, run_id=Legacy(1.0), batch=False, show=None)
    # --- model ------------------------------------------------------------------------------------------
    mode: str = setting("head", "head: frozen backbone, cached features; full: fine-tune the backbone",
                        choices=MODES, run_id=HASHED, batch=True, show="train", label="Mode")
    backbone: str | None = setting(None, "hub id or local path (default: embedded all-MiniLM-L6-v2)",
                                   run_id=HASHED, batch=True, show="train", label="Backbone")
    head_hidden: int = setting(256, "hidden width of the reward head (0: linear head)", range=NON_NEGATIVE,
                               run_id=HASHED, batch=True, show=None)
    max_length: int | None = setting(None, "tokens per response", range=AT_LEAST_1,
                                     by_mode={"head": 256, "full": 128}, run_id=HASHED, batch=True, show=None)
    # --- optimisation -----------------------------------------------------------------------------------
    epochs: int | None = setting(None, "passes over the training split", range=AT_LEAST_1,
                                 by_mode={"head": 50, "full": 1}, run_id=HASHED, batch=True, show="train",
                                 label="Epochs")
    batch_size: int | None = setting(None, "pairs in the Bradley-Terry batch (the linearized penalty is "
                                     "estimated on the same batch)", range=AT_LEAST_1,
                                     by_mode={"head": 128, "full": 32}, run_id=HASHED, batch=True, show=None)
    constraint_batch_size: int | None = setting(
        None, "extra pairs drawn each step for the constraint terms (default 0; 1024 for the fixed-lambda "
        "hinge in head mode)", range=NON_NEGATIVE, run_id=HASHED, batch=False, show=None)
    lr: float | None = setting(None, "learning rate", range=POSITIVE, by_mode={"head": 3e-3, "full": 3e-5},
                               run_id=HASHED, batch=True, show=None)
    weight_decay: float = setting(0.0, "AdamW weight decay", range=NON_NEGATIVE, run_id=HASHED, batch=True,
                                  show=None)
    dual_lr: float = setting(0.1, "dual step size eta_lambda (small: the primal player must settle between "
                             "dual steps)", range=POSITIVE, run_id=HASHED, batch=False, show=None, trl={})
    ema: float = setting(0.0, "momentum of running sums of dual statistics (0: the buffer alone)",
                         range=UNIT_OPEN, run_id=HASHED, batch=False, show=None, trl={})
    dual_signal: str = setting("auto", "what the dual step ascends on: strict or proxy (smooth) statistics; "
                               "auto: smooth for DP/EO, strict for CF", choices=("auto", "strict", "proxy"),
                               run_id=HASHED, batch=False, show=None, trl={})
    lambda_max: float | None = setting(0.3, "cap on each multiplier (none: no cap)", range=POSITIVE,
                                       none_word="none", run_id=HASHED, batch=False, show=None, trl={})
    dual_every: int | None = setting(None, "dual step every N steps on the training split's statistics (on "
                                     "small data with few steps per epoch, lower it)", range=AT_LEAST_1,
                                     by_mode={"head": 20, "full": 5}, run_id=HASHED, batch=False, show=None,
                                     trl={})
    dual_source: str = setting("auto", "statistics of the dual step: exact (a fresh pass over the training "
                               "split), buffer (each pair's latest rewards); auto: exact in head mode",
                               choices=("auto", "exact", "buffer"), run_id=HASHED, batch=False, show=None)
    eval_every: int = setting(0, "validation every N steps (0: each epoch)", range=NON_NEGATIVE,
                              run_id=HASHED, batch=True, show=None)
    ckpt_every: int = setting(50, "checkpoint every N steps (0: never)", range=NON_NEGATIVE, run_id=HASHED,
                              batch=True, show=None)
    select: str = setting("best", "iterate returned: best (feasible on validation, else indistinguishable "
                          "from chance, else least violating) or last", choices=("best", "last"),
                          run_id=HASHED, batch=False, show=None)
    select_chance: float = setting(0.05, "permutation p-value at or above which a validation DP/EO violation "
                                   "counts as chance (0: that tier off)", range=UNIT_OPEN, run_id=Legacy(0.0),
                                   batch=False, show=None)
    select_metric: str = setting("accuracy", "what ranks iterates within a tier: validation accuracy or "
                                 "Bradley-Terry loss", choices=("accuracy", "loss"),
                                 run_id=Legacy("accuracy"), batch=False, show=None)
    average: float = setting(0.0, "per-step decay of an exponential moving average of the weights, one more "
                             "candidate for select (0: off; constrained runs only)", range=UNIT_OPEN,
                             run_id=Legacy(0.0), batch=False, show=None)
    seed: int = setting(0, "training seed", range=NON_NEGATIVE, sweep=False, run_id=HASHED, batch=False,
                        show=None)
    sweep: str | None = setting(None, "tag: the sweep this run belongs to", sweep=False, run_id=UNHASHED,
                                batch=False, show=None)

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, _checked(f, getattr(self, f.name)))
        if self.split_by is not None and not (self.split_by in ("item", "template") or (
                self.split_by.startswith("column:") and self.split_by[len("column:"):].strip())):
            raise FaroError(f"split_by must be item, template or column:NAME (--split-by), got {self.split_by!r}")
        kind = "item" if self.split_by is None else _unit_kind(self.split_by)
        val = self.val_frac if self.val_frac is not None else setting_of("val_frac").metadata["by_split"][kind]
        test = self.test_frac if self.test_frac is not None else setting_of("test_frac").metadata["by_split"][kind]
        if val + test >= 1:
            raise FaroError(f"val_frac + test_frac must be < 1, got {val} + {test}")
        check_kinds(method_of({"method": self.method, "expgrad_base": self.expgrad_base}), self.constraints)

    def resolved(self) -> FaroConfig:
        """A copy with the mode-dependent defaults (``by_mode``) and the name filled in."""
        head = self.mode == "head"
        out = FaroConfig(**self.to_dict())
        if out.attribute is None:
            out.attribute = default_attribute(out.data, out.format, out.role_columns)
        if out.split_by is None:
            out.split_by = default_split_by(out.data, out.format)
        for f in fields(out):
            by_split = f.metadata.get("by_split")
            if by_split and getattr(out, f.name) is None:
                setattr(out, f.name, by_split[_unit_kind(out.split_by)])
        for f in fields(out):
            by_mode = f.metadata.get("by_mode")
            if by_mode and getattr(out, f.name) is None:
                setattr(out, f.name, by_mode[out.mode])
        if out.constraint_batch_size is None:
            # the linearized penalty is unbiased on the BT batch; only the fixed-lambda hinge needs more
            out.constraint_batch_size = SPECS[out.method].head_constraint_batch if head else 0
        if out.name is None:
            out.name = run_name(out.method, out.constraints, out.epsilon, out.active_constraints)
        return out

    @property
    def active_constraints(self) -> list[str]:
        """Constraints that can bind: none when epsilon is infinite or the method ignores them."""
        if not SPECS[self.method].constrained or not math.isfinite(self.epsilon):
            return []
        return list(self.constraints)

    def to_dict(self) -> dict[str, Any]:
        """The fields, as ``FaroConfig(**d)`` takes them back (lists and dicts copied: a field holds scalars,
        lists of strings or a dict of floats, so this equals ``dataclasses.asdict`` at a sixth of its cost)."""
        return {f.name: _copied(getattr(self, f.name)) for f in fields(self)}

    def stored_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds: the fields and ``config_version``."""
        return {**self.to_dict(), "config_version": CONFIG_VERSION}

    def run_id_payload(self) -> dict[str, Any]:
        """The resolved fields hashed into a sweep's run id: :data:`RUN_ID_FIELDS`, plus each
        :data:`LEGACY_DEFAULTS` field whose value differs from its legacy one."""
        d = self.resolved().to_dict()
        out = {k: d[k] for k in RUN_ID_FIELDS}
        out.update({k: d[k] for k, legacy in LEGACY_DEFAULTS.items() if d[k] != legacy})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaroConfig:
        """A stored config of any version (see :func:`migrate_config`)."""
        return cls(**migrate_config(d))



def _copied(value: Any) -> Any:
    """A field's value for :meth:`FaroConfig.to_dict`: a list or dict copied, anything else as it is."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def check_classified(cls: type) -> None:
    """Raise :class:`FaroError` unless every field of the dataclass ``cls`` carries its classification
    (:data:`CLASSIFICATION`, as :func:`setting` writes it) with valid values, and a field shown on a form has
    its label."""
    for f in fields(cls):
        md = f.metadata
        missing = [k for k in CLASSIFICATION if k not in md]
        if missing:
            raise FaroError(f"{cls.__name__}.{f.name} is not classified: its metadata lacks {', '.join(missing)} "
                            "(declare it with faro_core.train.config.setting)")
        if not (md["run_id"] in (HASHED, UNHASHED) or isinstance(md["run_id"], Legacy)):
            raise FaroError(f"{cls.__name__}.{f.name}: run_id must be HASHED, UNHASHED or Legacy(v), got "
                            f"{md['run_id']!r}")
        if not isinstance(md["batch"], bool):
            raise FaroError(f"{cls.__name__}.{f.name}: batch must be True or False, got {md['batch']!r}")
        if md["show"] not in SHOWN_ON or (md["show"] and not md.get("label")):
            raise FaroError(f"{cls.__name__}.{f.name}: show must be one of {SHOWN_ON} (with a label), got "
                            f"{md['show']!r}")


def legacy_defaults(cls: type = FaroConfig) -> dict[str, object]:
    """Each ``Legacy(v)`` field of ``cls`` with ``v``."""
    return {f.name: f.metadata["run_id"].value for f in fields(cls) if isinstance(f.metadata["run_id"], Legacy)}


def fields_where(key: str, value: Any, cls: type = FaroConfig) -> tuple[str, ...]:
    """The fields of ``cls`` whose classification ``key`` is ``value``, in declaration order."""
    return tuple(f.name for f in fields(cls) if f.metadata[key] == value)


check_classified(FaroConfig)
# Derived from the fields' classification (the one place it is written): run ids hash RUN_ID_FIELDS of the
# resolved config, plus each LEGACY_DEFAULTS field off its legacy value; UNHASHED_FIELDS never.
LEGACY_DEFAULTS: dict[str, object] = legacy_defaults()
UNHASHED_FIELDS: tuple[str, ...] = fields_where("run_id", UNHASHED)
RUN_ID_FIELDS: tuple[str, ...] = fields_where("run_id", HASHED)

def default_attribute(data: str | None, format: str | None = None, role_columns: list[str] | None = None) -> str:
    """The attribute a config that names none gets: ``"role"`` on BBQ-format data (format ``bbq``, or a path
    detected as BBQ) and on a table that names its role columns, :data:`DEMO_ATTRIBUTE` on the embedded demo,
    else ``"group"``. Detection reads the source's first record (no network: a hub id that is not a local path
    counts as not BBQ-format)."""

    if role_columns:
        return "role"
    if data is None or str(data) == "demo":
        return DEMO_ATTRIBUTE
    if str(data) == "demo-mini":
        return MINI_DEMO_ATTRIBUTE
    if format == "demo":
        return DEMO_ATTRIBUTE
    return "role" if _bbq_format(data, format) else "group"


def default_split_by(data: str | None, format: str | None = None) -> str:
    """The split unit a config that names none gets: ``template`` on BBQ-format data (the embedded demo
    included: held-out questions come from templates the model never saw), else ``item``. The mini demo has
    4 templates per category, too few to hold out: it splits by item."""
    if str(data) == "demo-mini":
        return "item"
    if data is None or str(data) == "demo" or format == "demo":
        return "template"
    return "template" if _bbq_format(data, format) else "item"


def _bbq_format(data: str, format: str | None) -> bool:
    """Is ``data`` BBQ-format (``format``, or else detected from the source's first record)? A source that is
    not a local path (a hub id) counts as not BBQ-format: no network here."""
    from pathlib import Path

    fmt = format
    if fmt is None:
        if not Path(str(data)).exists():
            return False
        from faro_core.data import detect_format

        try:
            fmt = detect_format(data)
        except FaroError:
            return False
    return fmt in ("bbq", "demo")


def _unit_kind(unit: str) -> str:
    return "column" if unit.startswith("column:") else unit


def migrate_config(d: dict[str, Any]) -> dict[str, Any]:
    """The ``FaroConfig`` fields of a stored config of any ``config_version``, as this version reads them.

    Version 1 (no ``config_version`` key) and 2 have the same fields; in every version, a field the config
    lacks takes its :data:`LEGACY_DEFAULTS` value (how the run behaved before the field existed), and keys
    that are not fields (``run_id``, ``config_version``) are dropped. A config newer than this code is refused.
    ``method`` is read as stored: BT's two spellings (``bt``, and ``faro`` with no constraint that can bind)
    are one method (:func:`faro_core.train.method_spec.identity`) and each keeps the run id it was stored with.
    """
    if not isinstance(d, dict):
        raise FaroError(f"a config must be a JSON object, got {type(d).__name__}")
    version = d.get("config_version", 1)
    if not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise FaroError(f"config_version {version!r} is not one this Faro reads (1..{CONFIG_VERSION}); "
                        f"upgrade faro_core")
    names = {f.name for f in fields(FaroConfig)}
    legacy = {k: v for k, v in LEGACY_DEFAULTS.items() if k not in d}
    return {**legacy, **{k: v for k, v in d.items() if k in names}}


def setting_of(name: str) -> Field:
    """The dataclass field of setting ``name`` (its ``metadata`` holds help, range, choices, flag)."""
    for f in fields(FaroConfig):
        if f.name == name:
            return f
    raise KeyError(name)


def default_of(name: str, mode: str | None = None, split: str | None = None) -> Any:
    """The default of setting ``name``; with ``mode`` (``split``: a split unit), a None default resolved for
    that mode (split unit)."""
    f = setting_of(name)
    value = f.default_factory() if f.default is MISSING else f.default
    by_mode = f.metadata.get("by_mode")
    if value is None and split and f.metadata.get("by_split"):
        return f.metadata["by_split"][_unit_kind(split)]
    return by_mode[mode] if value is None and mode and by_mode else value


def flag_of(name: str) -> str:
    """The CLI flag of setting ``name`` (``--batch-size``)."""
    return setting_of(name).metadata.get("flag") or "--" + name.replace("_", "-")


def describe(f: Field, cli: bool = True, brief: bool = False) -> str:
    """What values a setting takes, in words (for ``--help``; ``cli``: as written on the CLI; ``brief``: for an
    error, without what None means)."""
    md = f.metadata
    base = _base_type(f)
    if md.get("words") and cli:
        what = "one of " + ", ".join(md["words"])
    elif md.get("choices"):
        what = ("a comma-separated subset of " if base == "list" else "one of ") + ", ".join(md["choices"])
    elif md.get("range") is not None:
        kind = {"int": "an integer ", "dict": "kind=value pairs with each value "}.get(
            base, "" if brief else "a number ")
        what = f"{kind}{md['range'].describe()}"
    else:
        what = {"list": "a comma-separated list", "bool": "true or false"}.get(base, "text")
    if brief:
        return what
    if md.get("by_mode"):
        what += ", or unset (" + ", ".join(f"{v:g} in {m} mode" for m, v in md["by_mode"].items()) + ")"
    elif md.get("by_split"):
        what += ", or unset (" + ", ".join(f"{v:g} by {u}" for u, v in md["by_split"].items()) + ")"
    elif _optional(f):
        what += f", or {md.get('none_word') or 'unset'}"
    return what


def parse_text(name: str, text: str) -> Any:
    """The value of setting ``name`` written as text (a CLI word, a form field); range-checked."""
    f = setting_of(name)
    md, base, s = f.metadata, _base_type(f), str(text).strip()
    if md.get("none_word") and s.lower() == md["none_word"] and (_optional(f) or base == "list"):
        value: Any = None if _optional(f) else []
    elif md.get("words"):
        if s not in md["words"]:
            raise _error(f, text, cli=True)
        value = md["words"][s]
    elif base == "bool":
        if s.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise _error(f, text, cli=True)
        value = s.lower() in ("true", "1", "yes")
    elif base in ("int", "float"):
        try:
            value = int(s) if base == "int" else float(s)
        except ValueError:
            raise _error(f, text, cli=True) from None
    elif base == "list":
        value = [x.strip() for x in s.split(",") if x.strip()]
    elif base == "dict":
        value = {}
        for part in (p for p in s.split(",") if p.strip()):
            key, sep, num = part.partition("=")
            try:
                value[key.strip()] = float(num)
            except ValueError:
                raise _error(f, text, cli=True) from None
            if not sep:
                raise _error(f, text, cli=True)
    else:
        value = s
    return _checked(f, value)


def check_value(name: str, value: Any) -> Any:
    """``value`` as setting ``name`` stores it (range and choices checked), or :class:`FaroError`."""
    return _checked(setting_of(name), value)


def parse_values(name: str, text: str) -> list[Any]:
    """Several values of setting ``name`` separated by commas or semicolons (a grid: ``0.02, 0.05, inf``)."""
    parts = [p for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        raise FaroError(f"{name} ({flag_of(name)}): give one or more values, {describe(setting_of(name))}")
    return [parse_text(name, p) for p in parts]


# ---------------------------------------------------------------------------------------------------------
def _base_type(f: Field) -> str:
    t = str(f.type).replace(" | None", "").replace("None | ", "").strip()
    return {"list[str]": "list", "dict[str, float]": "dict"}.get(t, t)


def _optional(f: Field) -> bool:
    return "None" in str(f.type)


def _error(f: Field, value: Any, cli: bool = False) -> FaroError:
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    return FaroError(f"{f.name} must be {describe(f, cli, brief=True)} ({flag}), got {value!r}")


def _checked(f: Field, v: Any) -> Any:
    """``v`` as setting ``f`` stores it (ints from integral floats, lists from comma strings), or FaroError."""
    md, base = f.metadata, _base_type(f)
    if f.name == "epsilon" and v is None:  # JSON stores inf as null
        v = math.inf
    if v is None:
        if _optional(f):
            return None
        raise _error(f, v)
    if base == "bool":
        if not isinstance(v, bool):
            raise _error(f, v)
        return v
    if base in ("int", "float"):
        if isinstance(v, str) and base == "float":
            try:
                v = float(v)
            except ValueError:
                raise _error(f, v) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _error(f, v)
        if base == "int":
            if isinstance(v, float) and not v.is_integer():
                raise _error(f, v)
            v = int(v)
        else:
            v = float(v)
        if md.get("range") is not None and v not in md["range"]:
            raise _error(f, v)
        return v
    if base == "list":
        if isinstance(v, str):
            v = v.split(",")
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise _error(f, v)
        v = [x.strip() for x in v if x.strip()]
        if md.get("choices"):
            v = [x.lower() for x in v if x.lower() != (md.get("none_word") or "")]
            bad = [x for x in v if x not in md["choices"]]
            if bad:
                raise FaroError(f"unknown {f.name.rstrip('s')} {bad[0]!r}; choose from "
                                f"{md.get('none_word') + ', ' if md.get('none_word') else ''}"
                                f"{', '.join(md['choices'])}")
        return v
    if base == "dict":
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise _error(f, v)
        bad = [k for k in v if k not in KINDS]
        if bad:
            raise FaroError(f"{f.name}: unknown kind {bad[0]!r}; choose from {', '.join(KINDS)}")
        out = {}
        for k, x in v.items():
            if isinstance(x, bool) or not isinstance(x, (int, float)) or float(x) not in md["range"]:
                raise _error(f, v)
            out[k] = float(x)
        return out
    if not isinstance(v, str):
        raise _error(f, v)
    if md.get("choices") and v not in md["choices"]:
        raise FaroError(f"unknown {f.name} {v!r}; choose from {', '.join(md['choices'])}")
    return v
