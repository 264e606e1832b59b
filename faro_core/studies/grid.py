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
from dataclasses import dataclass, field

from faro_core.errors import FaroError
from faro_core.fairness.kinds import KINDS
from faro_core.train.config import LEGACY_DEFAULTS, FaroConfig
from faro_core.train.methods import METHODS, PRIMARY, baselines

FIXED_LAMBDAS = (1.0, 5.0)
# Config fields added after sweeps were run, with the default that reproduces the older behaviour (hashed into
# run ids only off that default; kept under this name for scripts that read it).
HASH_OPTIONAL: dict[str, object] = LEGACY_DEFAULTS


@dataclass
class SweepSpec:
    """What to sweep. ``base`` holds data/model settings shared by every run (a FaroConfig)."""

    base: FaroConfig
    kinds: list[str] = field(default_factory=lambda: ["dp"])
    epsilons: list[float] = field(default_factory=lambda: [0.1, 0.05])
    seeds: list[int] = field(default_factory=lambda: [0])
    # True: each seed also redraws the data (``data_seed = seed``: the split and the skewed items), so seed
    # spread measures data noise as well as training noise; False: every seed shares ``base.data_seed``
    redraw_data: bool = False
    # data draws (split and skewed items), crossed with ``seeds`` (training seeds): a grid can vary one and
    # hold the other. None: ``base.data_seed`` alone (or, with ``redraw_data``, one draw per seed)
    data_seeds: list[int] | None = None
    baselines: list[str] = field(default_factory=list)
    name: str = "sweep"
    n_boot: int = 100
    delta: float = 0.05
    certify_epsilon: float = 0.05


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
    """Every config of the sweep: Faro on kind x epsilon x seed, then the baselines; with ``data_seeds``,
    that grid once per data draw (data seed outermost)."""
    bad = [k for k in spec.kinds if k not in KINDS]
    if bad:
        raise FaroError(f"unknown constraint kind(s) {bad}; choose from {', '.join(KINDS)}")
    d = spec.base.to_dict()
    d.pop("name", None)
    out = [FaroConfig(**{**d, "method": PRIMARY, "constraints": [k], "epsilon": e, "seed": s, "sweep": spec.name})
           for k in spec.kinds for e in spec.epsilons for s in spec.seeds]
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
