"""Adding a method is one registry entry plus its test: a toy method, registered the way
docs/ARCHITECTURE.md ("Adding a method") says, trains end to end on the mini demo (head mode, one epoch),
is stored as a run, and appears in the results table with its label and colour. The registries are patched
for this test only (``monkeypatch``), so the toy method is gone afterwards."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from faro_core.results.plots import method_color
from faro_core.results.table import config_columns, run_table
from faro_core.store.runs import RunStore
from faro_core.studies.grid import baseline_configs, parse_baselines, run_id_for
from faro_core.train import FaroConfig, method_spec, methods, train

TOY = method_spec.MethodSpec("toy", "Toy method", "every pair weighs 2 (a test's method)", "#123456")


def toy_weights(df: pd.DataFrame) -> torch.Tensor:
    """The toy's behaviour: example weights, one per pair."""
    return torch.full((len(df),), 2.0)


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> method_spec.MethodSpec:
    # step 1: the spec in method_spec.SPECS; step 2: its behaviour in methods.BEHAVIOUR, bound into
    # methods.METHODS (built from both at import, which has happened: the test binds the entry itself)
    monkeypatch.setitem(method_spec.SPECS, TOY.name, TOY)
    monkeypatch.setitem(methods.BEHAVIOUR, TOY.name, {"example_weights": toy_weights})
    monkeypatch.setitem(methods.METHODS, TOY.name, methods.bind(TOY, **methods.BEHAVIOUR[TOY.name]))
    return TOY


def test_a_toy_method_runs_end_to_end(toy: method_spec.MethodSpec, demo_mini: str, tmp_path: Path) -> None:
    assert toy.name in method_spec.baselines() and parse_baselines("toy") == ["toy"]
    (cfg,) = baseline_configs(FaroConfig(data=demo_mini, mode="head", epochs=1, head_hidden=8, min_count=5),
                              ["toy"], ["dp"], [0.05], [0])
    assert cfg.method == "toy" and cfg.resolved().name == "toy"
    store = RunStore(tmp_path)
    run = train(cfg, store, run_id=run_id_for(cfg), progress=False)
    assert run.status == "done" and store.get(run.run_id).config["method"] == "toy"
    assert config_columns(run)["method"] == "toy"
    row = run_table(store).set_index("run_id").loc[run.run_id]
    assert row["family"] == "Toy method" and row["method"] == "toy"
    assert method_color(row["family"]) == "#123456" == method_spec.display_color(run.config)


def test_the_toy_method_is_gone_after_its_test() -> None:
    assert "toy" not in method_spec.SPECS and "toy" not in methods.METHODS and "toy" not in method_spec.CONFIG_METHODS
