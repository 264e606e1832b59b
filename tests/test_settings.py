"""Settings are classified once, on their fields, and everything generated from the classification has them:
run ids, batch keys, ``faro sweep``'s flags, the dashboard's widgets and ``FairRewardConfig``."""

from __future__ import annotations

import json
import math
from dataclasses import field, fields, make_dataclass
from pathlib import Path

import pytest

from faro_core.errors import FaroError
from faro_core.studies.grid import SweepSpec, grid, run_id_for
from faro_core.train import method_spec
from faro_core.train.batched import BATCH_KEYS, batch_key
from faro_core.train.config import (
    HASHED,
    LEGACY_DEFAULTS,
    RUN_ID_FIELDS,
    UNHASHED,
    UNHASHED_FIELDS,
    FaroConfig,
    Legacy,
    check_classified,
    fields_where,
    flag_of,
    setting,
)
from faro_core.train.forms import value_of, widgets


def _sweep_parser():  # noqa: ANN202
    from faro_core.cli import build_parser

    return build_parser()


def test_a_field_planted_without_its_classification_is_refused():
    planted = make_dataclass("Planted", [("x", int, field(default=0, metadata={"help": "x"}))], bases=(FaroConfig,))
    with pytest.raises(FaroError, match=r"Planted\.x is not classified: its metadata lacks run_id, batch, show"):
        check_classified(planted)
    half = make_dataclass("Half", [("x", int, field(default=0, metadata={"run_id": HASHED, "batch": False}))],
                          bases=(FaroConfig,))
    with pytest.raises(FaroError, match=r"Half\.x is not classified: its metadata lacks show"):
        check_classified(half)
    bad = make_dataclass("Bad", [("x", int, setting(0, "x", run_id=HASHED, batch=False, show="sidebar"))],
                         bases=(FaroConfig,))
    with pytest.raises(FaroError, match="show must be one of"):
        check_classified(bad)
    with pytest.raises(TypeError, match="run_id"):  # setting() itself takes no field without it
        setting(0, "x", batch=False, show=None)
    ok = make_dataclass("Ok", [("x", int, setting(0, "x", run_id=Legacy(0), batch=True, show=None))],
                        bases=(FaroConfig,))
    check_classified(ok)
    assert fields_where("batch", True, ok)[-1] == "x"


def test_run_ids_hash_what_each_field_says():
    names = [f.name for f in fields(FaroConfig)]
    assert sorted([*RUN_ID_FIELDS, *LEGACY_DEFAULTS, *UNHASHED_FIELDS]) == sorted(names)
    for f in fields(FaroConfig):
        kind = f.metadata["run_id"]
        assert (f.name in RUN_ID_FIELDS) == (kind == HASHED) and (f.name in UNHASHED_FIELDS) == (kind == UNHASHED)
        if isinstance(kind, Legacy):
            assert LEGACY_DEFAULTS[f.name] == kind.value
    payload = FaroConfig().run_id_payload()
    assert set(RUN_ID_FIELDS) <= set(payload) and not set(UNHASHED_FIELDS) & set(payload)
    base = FaroConfig(attribute="group", split_by="item", dp_partner=False)
    assert "dp_partner" not in base.run_id_payload()  # at its legacy value: left out, old ids kept
    assert run_id_for(base) != run_id_for(FaroConfig(**{**base.to_dict(), "dp_partner": True}))
    assert run_id_for(base) == run_id_for(FaroConfig(**{**base.to_dict(), "sweep": "other"}))
    assert run_id_for(base) != run_id_for(FaroConfig(**{**base.to_dict(), "epochs": 3}))


# a value other than the default, per field, to see that batch keys follow the classification
OTHER = {"name": "n", "data": "demo-mini", "format": "demo", "attribute": "group", "role_columns": ["a", "b"],
         "group": "g", "strata": ["s"], "dp_scope": "all", "dp_partner": False, "groups": ["x"], "skew": 0.5,
         "data_seed": 3, "split_by": "item", "val_frac": 0.3, "test_frac": 0.3, "constraints": ["dp"],
         "epsilon": 0.1, "min_count": 5, "temperature": {"dp": 0.5}, "method": "fixed_lambda",
         "fixed_lambda": 2.0, "expgrad_base": "head", "dro_eta": 0.5, "fair_alpha": 3.0, "fair_weight": 2.0,
         "mode": "full", "backbone": "b", "head_hidden": 8, "max_length": 64, "epochs": 3, "batch_size": 7,
         "constraint_batch_size": 9, "lr": 0.5, "weight_decay": 0.1, "dual_lr": 0.5, "ema": 0.5,
         "dual_signal": "strict", "lambda_max": 1.0, "dual_every": 3, "dual_source": "buffer", "eval_every": 4,
         "ckpt_every": 5, "select": "last", "select_chance": 0.1, "select_metric": "loss", "average": 0.1,
         "seed": 4, "sweep": "t"}


def test_batch_keys_are_the_fields_classified_batch():
    assert set(OTHER) == {f.name for f in fields(FaroConfig)}, "give the new field a value in OTHER"
    assert BATCH_KEYS == fields_where("batch", True)
    base = FaroConfig()
    for name, value in OTHER.items():
        other = FaroConfig(**{**base.to_dict(), name: value})
        assert (batch_key(other) != batch_key(base)) == (name in BATCH_KEYS), name


def test_sweep_flags_come_from_the_fields():
    from faro_core.cli.sweep_cmd import spec_from_args

    parser = _sweep_parser()
    sweep = parser._subparsers._group_actions[0].choices["sweep"]  # noqa: SLF001
    flags = {s for a in sweep._actions for s in a.option_strings}  # noqa: SLF001
    assert {flag_of(f.name) for f in fields(FaroConfig) if f.metadata["sweep"]} <= flags
    assert set(parser.parse_args(["sweep"]).config_flags) == {f.name for f in fields(FaroConfig)
                                                              if f.metadata["sweep"]}
    assert {f.metadata["flag"] for f in fields(SweepSpec) if f.name != "base"} <= flags
    # defaults live in SweepSpec alone: a bare `faro sweep` is SweepSpec's defaults on FaroConfig's
    assert spec_from_args(parser.parse_args(["sweep"])) == SweepSpec(base=FaroConfig())
    baselines = next(a for a in sweep._actions if "--baselines" in a.option_strings)  # noqa: SLF001
    assert all(n in baselines.help for n in method_spec.baselines())
    with pytest.raises(FaroError, match="unknown baseline"):
        spec_from_args(parser.parse_args(["sweep", "--baselines", "bt,nope"]))


def test_a_spec_launches_as_the_command_line_that_reads_it_back(tmp_path: Path):
    """The Train page's grid launch: ``sweep_argv`` writes the base config and spells the grid with the
    generated flags; ``faro sweep``'s own parser reads that command back to the same spec (same run ids)."""
    from faro_core.cli.sweep_cmd import spec_from_args
    from faro_core.studies.sweep import sweep_argv

    spec = SweepSpec(base=FaroConfig(epochs=7, strata=["question_polarity"], dp_partner=False),
                     kinds=["dp", "eo"], epsilons=[0.05, math.inf], seeds=[0, 1], baselines=["bt", "reweight"],
                     combine=True, name="ui-1", n_boot=7, data_seeds=[2])
    argv = sweep_argv(spec, tmp_path)
    assert not {"--epochs", "--strata", "--dp-partner"} & set(argv)
    path = Path(argv[argv.index("--config") + 1])
    assert FaroConfig.from_dict(json.loads(path.read_text())) == spec.base
    back = spec_from_args(_sweep_parser().parse_args(argv[3:]))
    assert back == spec and [run_id_for(c) for c in grid(back)] == [run_id_for(c) for c in grid(spec)]
    # combine: one Faro run under both kinds per epsilon and seed, then the baselines
    assert [c.constraints for c in grid(spec) if c.method == "faro"] == [["dp", "eo"]] * 4
    with pytest.raises(FaroError, match="unknown constraint kind"):
        sweep_argv(SweepSpec(base=FaroConfig(), kinds=["xx"], name="bad"), tmp_path)
    assert not (tmp_path / "_sweeps" / "bad").exists()


def test_each_page_shows_the_fields_classified_for_it():
    for page in ("train", "data"):
        assert [w.name for w in widgets(page)] == list(fields_where("show", page))
        assert all(w.label and w.help for w in widgets(page))
    grid_ws = widgets("train", SweepSpec)
    assert [w.name for w in grid_ws] == [f.name for f in fields(SweepSpec) if f.metadata["show"] == "train"]
    by = {w.name: w for w in grid_ws + widgets("train") + widgets("data")}
    assert by["baselines"].options == method_spec.baselines()
    assert by["epochs"].min == 1 and by["epochs"].initial == 50  # the range and the head-mode default
    assert by["attribute"].options == (None, "group", "role")
    # widget values become the fields' values, checked as the CLI checks them
    assert value_of(by["strata"], "a, b") == ["a", "b"] and value_of(by["group"], "") is None
    assert value_of(by["seeds"], 3) == [0, 1, 2] and value_of(by["epsilons"], "0.05, inf") == [0.05, math.inf]
    with pytest.raises(FaroError, match="epsilon must be >= 0"):
        value_of(by["epsilons"], "0.05, -1")
    with pytest.raises(FaroError, match="epochs must be an integer >= 1"):
        value_of(by["epochs"], 0)


def test_fair_reward_config_has_the_fields_classified_trl():
    pytest.importorskip("trl")
    from faro_core.integrations.trl import FARO_SETTINGS, FairRewardConfig

    classified = [f.name for f in fields(FaroConfig) if f.metadata["trl"] is not None]
    assert sorted(FARO_SETTINGS.values()) == sorted(classified)
    assert {"strata_columns": "strata", "attribute_column": "group"}.items() <= FARO_SETTINGS.items()
    cfg = FairRewardConfig(output_dir="/tmp/faro-settings-test", use_cpu=True, bf16=False, report_to=[])
    assert (cfg.dual_every, cfg.attribute, cfg.attribute_column, cfg.lambda_max, cfg.constraints) == (
        5, "group", "group", 0.3, [])
    with pytest.raises(FaroError, match=r"ema must be in \[0, 1\)"):
        FairRewardConfig(output_dir="/tmp/faro-settings-test", use_cpu=True, bf16=False, report_to=[], ema=1.0)
