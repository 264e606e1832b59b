"""Baselines train through the same run store and evaluate with the same code; each does what it claims."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from faro_core.baselines import BASELINES, baseline_configs, parse_baselines
from faro_core.errors import FaroError
from faro_core.evaluate.metrics import evaluate_run
from faro_core.paths import DEMO_DATA_DIR, SHARED_DATA
from faro_core.runs import RunStore
from faro_core.train import FaroConfig, train

DATA = None if DEMO_DATA_DIR.is_dir() else str(SHARED_DATA / "bbq" / "Religion.jsonl")
if DATA is not None and not Path(DATA).exists():
    pytest.skip("neither the demo data nor ../shared/data/bbq is present", allow_module_level=True)
BASE = FaroConfig(data=DATA, epochs=2, head_hidden=16, min_count=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    return RunStore(tmp_path_factory.mktemp("runs"))


def test_registry_and_parse() -> None:
    assert set(BASELINES) == {"bt", "reweight", "posthoc", "fixed_lambda", "expgrad"}
    assert parse_baselines("all") == list(BASELINES) and parse_baselines("none") == []
    with pytest.raises(FaroError):
        parse_baselines("bt,magic")
    cfgs = baseline_configs(BASE, ["bt", "expgrad"], ["dp", "cf"], [0.1, 0.05], [0])
    assert [c.method for c in cfgs] == ["bt", "expgrad", "expgrad"]
    assert math.isinf(cfgs[0].epsilon) and cfgs[1].constraints == ["dp"]


@pytest.mark.parametrize("method,kinds", [("bt", []), ("reweight", []), ("posthoc", []), ("fixed_lambda", ["dp"]),
                                          ("expgrad", ["dp"]), ("expgrad", ["eo"])])
def test_every_baseline_trains_and_evaluates(store: RunStore, method: str, kinds: list[str]) -> None:
    cfg = FaroConfig(**{**BASE.to_dict(), "method": method, "constraints": kinds, "epsilon": 0.1})
    run = train(cfg, store, run_id=f"b-{method}-{'-'.join(kinds) or 'none'}", progress=False)
    assert run.status == "done" and run.metrics()["method"] == method
    scores = pd.read_parquet(run.file("scores.parquet"))
    assert set(scores["split"]) == {"train", "val", "test"} and scores["r_chosen"].notna().all()
    res = evaluate_run(run, n_boot=5)
    assert 0 <= res["metrics"]["gold_accuracy"]["value"] <= 1


def test_posthoc_equalizes_group_means_on_train(store: RunStore) -> None:
    """The stored shifts are (stratum mean - group mean) of pair-centered rewards before shifting, and the
    shifted rewards have smaller group gaps of that mean."""
    run = store.get("b-posthoc-none")
    shifts = run.read("model.json")["shifts"]
    s = pd.read_parquet(run.file("scores.parquet"))
    s = s[s["split"] == "train"]

    def add(col: str) -> np.ndarray:
        return np.array([shifts.get(f"{g}|{st}", 0.0) if g is not None else 0.0
                         for g, st in zip(s[col], s["stratum"])])

    def gaps(r_c: np.ndarray, r_r: np.ndarray) -> pd.Series:
        half = (r_c - r_r) / 2
        resp = pd.DataFrame({"g": list(s["chosen_group"]) + list(s["rejected_group"]), "s": list(s["stratum"]) * 2,
                             "r": np.r_[half, -half]}).dropna(subset=["g"])
        return resp.groupby("s")["r"].mean().reindex(resp.groupby(["g", "s"])["r"].mean().index,
                                                     level="s") - resp.groupby(["g", "s"])["r"].mean()

    scope = {k.split("|", 1)[1] for k in shifts}  # the strata DP applies to (BBQ: the ambiguous ones)
    before = gaps(s["r_chosen"].to_numpy() - add("chosen_group"), s["r_rejected"].to_numpy() - add("rejected_group"))
    before = before[before.index.get_level_values("s").isin(scope)]
    assert shifts and all(abs(shifts[f"{g}|{st}"] - v) < 1e-4 for (g, st), v in before.items())
    after = gaps(s["r_chosen"].to_numpy(), s["r_rejected"].to_numpy())
    after = after[after.index.get_level_values("s").isin(scope)]
    assert after.abs().mean() < before.abs().mean()


def test_expgrad_is_one_linear_head_that_load_scorer_reproduces(store: RunStore) -> None:
    from safetensors.torch import load_file

    from faro_core.evaluate.metrics import scores_for_data

    run = store.get("b-expgrad-dp")
    sd = load_file(str(run.file("model.safetensors")))
    assert set(sd) == {"net.0.weight", "net.0.bias"} and float(sd["net.0.bias"].abs().sum()) == 0.0
    assert run.read("model.json")["hidden"] == 0 and run.read("model.json")["expgrad"]["support"] >= 1
    ext = scores_for_data(run, DATA or "demo", limit=30)
    saved = pd.read_parquet(run.file("scores.parquet")).set_index("pair_id").loc[ext["pair_id"]]
    assert np.allclose(ext["r_chosen"], saved["r_chosen"], atol=1e-4)
    assert torch.isfinite(sd["net.0.weight"]).all()


def test_expgrad_rejects_cf(store: RunStore) -> None:
    with pytest.raises(FaroError):
        train(FaroConfig(**{**BASE.to_dict(), "method": "expgrad", "constraints": ["cf"]}), store, progress=False)
