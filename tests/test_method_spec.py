"""A method owns its identity: which method a stored config is, its label and colour, the kinds it takes and
its grid come from faro_core.train.method_spec; BT is one method in both stored spellings."""

from __future__ import annotations

import math

import pytest

from faro_core.cli import main
from faro_core.errors import FaroError
from faro_core.studies.grid import run_id_for
from faro_core.train import FaroConfig, method_spec
from faro_core.train.config import migrate_config

BT_SPELLINGS = [{"method": "bt", "constraints": [], "epsilon": math.inf},
                {"method": "faro", "constraints": ["dp"], "epsilon": math.inf},
                {"method": "faro", "constraints": [], "epsilon": 0.05}]


@pytest.mark.parametrize("spelling", BT_SPELLINGS)
def test_bt_is_one_method_and_keeps_its_run_ids(spelling: dict) -> None:
    cfg = FaroConfig(data="demo-mini", **spelling)
    stored = cfg.stored_dict() | {"run_id": "x", "epsilon": None if math.isinf(cfg.epsilon) else cfg.epsilon}
    again = FaroConfig(**migrate_config(stored))
    assert run_id_for(again) == run_id_for(cfg)  # each stored spelling keeps its run id
    assert again.method == spelling["method"]
    assert method_spec.identity(stored) == "bt" and method_spec.is_reference(stored)
    assert not method_spec.is_primary(stored)
    assert method_spec.display_label(stored) == "BT"
    assert method_spec.display_color(stored) == method_spec.SPECS["bt"].color
    assert cfg.resolved().name == "bt"


def test_labels_and_colours_come_from_the_spec() -> None:
    faro = {"method": "faro", "constraints": ["eo", "dp"], "epsilon": 0.05}
    assert method_spec.identity(faro) == "faro" and method_spec.display_label(faro) == "Faro-EO+DP"
    assert method_spec.display_color(faro) == dict(method_spec.SPECS["faro"].kind_colors)["eo"]
    head = {"method": "expgrad", "expgrad_base": "head", "constraints": ["dp"], "epsilon": 0.05}
    assert method_spec.identity(head) == "expgrad_head" and method_spec.display_label(head) == "ExpGrad (MLP head)"
    assert method_spec.display_label({"method": "someone_elses"}) == "someone_elses"
    assert method_spec.by_lambda("fixed_lambda") and not method_spec.by_lambda("select_only")


def test_grid_expansion_is_the_specs() -> None:
    fl = method_spec.SPECS["fixed_lambda"].configs(["dp", "cf"], [0.1, math.inf], (1.0, 5.0))
    assert [(c["constraints"], c["fixed_lambda"], c["epsilon"]) for c in fl] == [
        (["dp"], 1.0, 0.1), (["dp"], 5.0, 0.1), (["cf"], 1.0, 0.1), (["cf"], 5.0, 0.1)]
    eg = method_spec.SPECS["expgrad_head"].configs(["dp", "cf"], [0.1], ())
    assert eg == [{"method": "expgrad", "expgrad_base": "head", "constraints": ["dp"], "epsilon": 0.1,
                   "name": "expgrad_head-dp-eps0.1"}]
    assert method_spec.SPECS["bt"].configs(["dp"], [0.1], ()) == [
        {"method": "bt", "constraints": [], "epsilon": math.inf}]


def test_kinds_are_checked_when_a_config_is_built() -> None:
    with pytest.raises(FaroError, match="does not support constraint 'cf'"):
        FaroConfig(method="expgrad", constraints=["cf"])
    FaroConfig(method="expgrad", constraints=["eo"])
    FaroConfig(method="bt", constraints=["cf"])  # an unconstrained method ignores its constraints


def test_cli_rejects_expgrad_cf_before_training(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["train", "--method", "expgrad", "--constraint", "cf", "--data", "demo-mini",
               "--runs-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "does not support constraint 'cf'" in err, err
    assert not any(tmp_path.iterdir())  # no run was started
