"""What a sweep trains: the grid of configs (Faro on kind x epsilon x seed, then the baselines) and their
deterministic run ids.

Run ids are ``<name>-s<seed>-<10 hex of the SHA-1 of the resolved config>``, so running the same sweep
again finds its runs. How a baseline expands is its spec's (:meth:`MethodSpec.configs
<faro_core.train.method_spec.MethodSpec.configs>`, by its ``grid``): one run per seed (unconstrained
methods), per (kind, lambda, seed) (``fixed_lambda``; its epsilon, used only to select the iterate, is the
smallest of the sweep's), or per (kind it supports, epsilon, seed).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from faro_core.errors import FaroError
from faro_core.fairness.kinds import KINDS
from faro_core.train import method_spec
from faro_core.train.config import LEGACY_DEFAULTS, FaroConfig, parse_values, setting_of
from faro_core.train.methods import METHODS, PRIMARY, baselines

FIXED_LAMBDAS = (1.0, 5.0)
# Config fields added after sweeps were run, with the default that reproduces the older behaviour (hashed into
# run ids only off that default; kept under this name for scripts that read it).
HASH_OPTIONAL: dict[str, object] = LEGACY_DEFAULTS


def parse_kinds(s: str) -> list[str]:
    """``"dp,eo"`` / ``"none"`` -> the constraint kinds (checked by :func:`grid`)."""
    return [k.strip().lower() for k in s.split(",") if k.strip() and k.strip().lower() != "none"]


def parse_floats(s: str) -> list[float]:
    """``"0.1,0.05,inf"`` -> [0.1, 0.05, inf]."""
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError as exc:
        raise FaroError(f"bad number list {s!r}: {exc}") from exc


def parse_seeds(s: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> list of ints."""
    out: list[int] = []
    try:
        for part in s.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError as exc:
        raise FaroError(f"bad seed list {s!r}: use 0,1,2 or 0-4") from exc
    return out


def _epsilons(s: str) -> list[float]:
    return parse_values("epsilon", s)  # each value range-checked as FaroConfig.epsilon


def _join(values: list[Any] | None) -> str:
    return ",".join("inf" if isinstance(v, float) and math.isinf(v) else f"{v:g}" if isinstance(v, float)
                    else str(v) for v in values or []) or "none"


def spec_field(default: Any = MISSING, help: str = "", *, default_factory: Any = MISSING, flag: str | None,
               parse: Callable[[str], Any] | None = None, fmt: Callable[[Any], str] = str,
               show: str | None = None, label: str = "", widget: str | None = None,
               options: Callable[[], tuple[Any, ...]] | None = None,
               labels: Callable[[Any], str] | None = None) -> Any:
    """A :class:`SweepSpec` field with its contract: ``help``; ``flag`` (of ``faro sweep``; None: none),
    ``parse`` (flag text -> value; a bool field is a switch) and ``fmt`` (value -> flag text); ``show``
    (``"train"``: the Train page's form shows it, with ``label``, ``widget``: its kind, ``options`` and their
    ``labels``; :mod:`faro_core.train.forms`)."""
    md = {"help": help, "flag": flag, "parse": parse, "fmt": fmt, "show": show, "label": label,
          "widget": widget, "options": options, "labels": labels}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


@dataclass
class SweepSpec:
    """What to sweep. ``base`` holds data/model settings shared by every run (a FaroConfig); every other field
    is a flag of ``faro sweep`` and its default is written here only (:func:`spec_flags`)."""

    base: FaroConfig = spec_field(flag=None)
    kinds: list[str] = spec_field(
        default_factory=lambda: ["dp"], help="constraint kinds to sweep, e.g. dp,eo,cf (Faro: one run per kind, "
        "epsilon and seed)", flag="--constraints", parse=parse_kinds, fmt=_join, show="train",
        label="Constraint type(s)", widget="multiselect", options=lambda: KINDS, labels=str.upper)
    epsilons: list[float] = spec_field(
        default_factory=lambda: [0.1, 0.05], help="comma-separated slacks: " + setting_of("epsilon").metadata["help"],
        flag="--epsilons", parse=_epsilons, fmt=_join, show="train", label="ε (one value or a grid)")
    seeds: list[int] = spec_field(default_factory=lambda: [0], help="training seeds: 0,1,2 or 0-4", flag="--seeds",
                                  parse=parse_seeds, fmt=_join, show="train", label="Seeds", widget="count")
    # True: each seed also redraws the data (``data_seed = seed``: the split and the skewed items), so seed
    # spread measures data noise as well as training noise; False: every seed shares ``base.data_seed``
    redraw_data: bool = spec_field(False, "each training seed also redraws the data (data_seed = seed)",
                                   flag="--redraw-data")
    # data draws (split and skewed items), crossed with ``seeds`` (training seeds): a grid can vary one and
    # hold the other. None: ``base.data_seed`` alone (or, with ``redraw_data``, one draw per seed)
    data_seeds: list[int] | None = spec_field(
        None, "data draws (split and skewed items) crossed with --seeds: 0,1,2 or 0-9 (default: --data-seed "
        "alone)", flag="--data-seeds", parse=lambda s: parse_seeds(s) if s.strip() else None, fmt=_join)
    baselines: list[str] = spec_field(
        default_factory=list, help="all, none, or some of " + ", ".join(method_spec.baselines()),
        flag="--baselines", parse=lambda s: parse_baselines(s), fmt=_join, show="train", label="Baselines",
        widget="multiselect", options=method_spec.baselines, labels=lambda n: method_spec.get(n).label)
    # True: Faro trains one run under all ``kinds`` together per epsilon and seed, instead of one per kind
    combine: bool = spec_field(False, "Faro: one run under all the kinds together (e.g. DP and EO) per epsilon "
                               "and seed, not one per kind", flag="--combine", show="train",
                               label="Combine in one run", widget="checkbox")
    name: str = spec_field("sweep", "sweep name (table in RUNS_DIR/_sweeps/NAME)", flag="--name")
    n_boot: int = spec_field(100, "bootstrap resamples per evaluation", flag="--n-boot", parse=int)
    delta: float = spec_field(0.05, "certificate failure probability", flag="--delta", parse=float, fmt="{:g}".format)
    certify_epsilon: float = spec_field(0.05, "epsilon at which every run is also certified per kind",
                                        flag="--certify-epsilon", parse=float, fmt="{:g}".format)


def spec_fields() -> list[Field]:
    """The fields of :class:`SweepSpec` that are flags of ``faro sweep``."""
    return [f for f in fields(SweepSpec) if f.metadata["flag"]]


def spec_default_text(f: Field) -> str:
    """The default of a :class:`SweepSpec` field as its flag writes it."""
    value = f.default_factory() if f.default is MISSING else f.default
    return f.metadata["fmt"](value) if value is not None else ""


def spec_from_flags(base: FaroConfig, given: dict[str, Any]) -> SweepSpec:
    """The :class:`SweepSpec` of ``base`` and the flags given (field name -> flag text; True for a switch),
    each parsed by its field's ``parse``; a field not given keeps its default."""
    values = {}
    for f in spec_fields():
        if f.name in given:
            v = given[f.name]
            values[f.name] = v if isinstance(v, bool) else (f.metadata["parse"] or str)(str(v))
    return SweepSpec(base=base, **values)


def spec_flags(spec: SweepSpec) -> list[str]:
    """``faro sweep``'s flags spelling every field of ``spec`` but ``base`` (what :func:`spec_from_flags` reads
    back to an equal spec)."""
    out: list[str] = []
    for f in spec_fields():
        v = getattr(spec, f.name)
        if isinstance(v, bool):
            out += [f.metadata["flag"]] if v else []
        elif v is not None:
            out += [f.metadata["flag"], f.metadata["fmt"](v)]
    return out


def run_id_for(config: FaroConfig) -> str:
    """Deterministic run id: a hash of :meth:`FaroConfig.run_id_payload` (the explicit list of hashed fields,
    faro_core.train.config.RUN_ID_FIELDS, plus the LEGACY_DEFAULTS fields off their legacy value)."""
    d = config.run_id_payload()
    h = hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{d['name']}-s{d['seed']}-{h}"


def parse_baselines(spec: str | list[str] | None) -> list[str]:
    """``"bt,expgrad"`` / ``"all"`` / ``"none"`` -> list of baseline names (validated)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or [])
    names = [n.strip().lower() for n in names if n and n.strip() and n.strip().lower() != "none"]
    if names == ["all"]:
        return list(baselines())
    bad = [n for n in names if n not in baselines()]
    if bad:
        raise FaroError(f"unknown baseline(s) {bad}; choose from all, {', '.join(baselines())}")
    return names


def baseline_configs(base: FaroConfig, names: list[str], kinds: list[str], epsilons: list[float],
                     seeds: list[int], fixed_lambdas: tuple[float, ...] = FIXED_LAMBDAS) -> list[FaroConfig]:
    """Configs of the baselines ``names`` on ``base``'s data/model settings (expanded as each entry's
    ``grid`` says; see the module docstring)."""
    d = base.to_dict()
    d.pop("name", None)
    return [FaroConfig(**{**d, **o, "seed": seed})
            for name in names for seed in seeds for o in METHODS[name].configs(kinds, epsilons, fixed_lambdas)]

def grid(spec: SweepSpec) -> list[FaroConfig]:
    """Every config of the sweep: Faro on kind x epsilon x seed (``combine``: all kinds in one run), then the
    baselines; with ``data_seeds``, that grid once per data draw (data seed outermost)."""
    bad = [k for k in spec.kinds if k not in KINDS]
    if bad:
        raise FaroError(f"unknown constraint kind(s) {bad}; choose from {', '.join(KINDS)}")
    d = spec.base.to_dict()
    d.pop("name", None)
    sets = [list(spec.kinds)] if spec.combine and len(spec.kinds) > 1 else [[k] for k in spec.kinds]
    out = [FaroConfig(**{**d, "method": PRIMARY, "constraints": ks, "epsilon": e, "seed": s, "sweep": spec.name})
           for ks in sets for e in spec.epsilons for s in spec.seeds]
    for c in baseline_configs(spec.base, spec.baselines, spec.kinds, spec.epsilons, spec.seeds):
        c.sweep = spec.name
        out.append(c)
    if spec.redraw_data and spec.data_seeds is not None:
        raise FaroError("give either data_seeds or redraw_data, not both")
    if spec.redraw_data:
        for c in out:
            c.data_seed = c.seed
    elif spec.data_seeds is not None:
        if not spec.data_seeds:
            raise FaroError("data_seeds is empty")
        out = [FaroConfig(**{**c.to_dict(), "data_seed": int(ds)}) for ds in spec.data_seeds for c in out]
    return out
