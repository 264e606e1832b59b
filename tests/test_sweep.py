"""Sweeps: deterministic ids, the grid, resuming without redoing finished runs, executors, Pareto/hypervolume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faro_core.cli import main
from faro_core.paths import DEMO_MINI_DIR
from faro_core.results.pareto import hypervolume, pareto_front
from faro_core.store.runs import RunStore
from faro_core.studies.grid import SweepSpec, grid, run_id_for
from faro_core.studies.sweep import plan_run, run_sweep
from faro_core.train import FaroConfig

DATA = "demo-mini"  # 512 shipped items: trainer mechanics, not the demo's findings
# tracked data: its absence is a broken checkout, a failure (tests/test_data.py), never a skip
assert DEMO_MINI_DIR.is_dir(), f"the tracked mini demo {DEMO_MINI_DIR} is missing"
BASE = FaroConfig(data=DATA, epochs=2, head_hidden=16, min_count=5)


def test_run_ids_are_deterministic_and_distinct() -> None:
    a = FaroConfig(constraints=["dp"], epsilon=0.05, seed=0)
    assert run_id_for(a) == run_id_for(FaroConfig(constraints=["dp"], epsilon=0.05, seed=0))
    assert run_id_for(a) != run_id_for(FaroConfig(constraints=["dp"], epsilon=0.05, seed=1))
    assert run_id_for(a) == run_id_for(FaroConfig(constraints=["dp"], epsilon=0.05, seed=0, sweep="other"))
    assert run_id_for(a).startswith("faro-dp-eps0.05-s0-")


def test_run_id_is_stable_across_added_options() -> None:
    """Finished sweeps resume by run id. This id was recorded when the sweep store was filled (before the
    ``average`` option existed); a new config field must join ``LEGACY_DEFAULTS`` (faro_core/train/config.py) with the default that
    keeps older behaviour, or every finished run of every sweep would be retrained."""
    # runs from before the DP partner split and the chance tier of selection keep their ids when asked for
    # the old behaviour
    # (and before the stereotype-role attribute and template splits, which the embedded demo now defaults to)
    old = FaroConfig(constraints=["dp"], epsilon=0.05, dp_partner=False, select_chance=0.0, attribute="group",
                     split_by="item")
    assert run_id_for(old) == "faro-dp-eps0.05-s0-ab8b87eef0"
    assert run_id_for(FaroConfig(constraints=["dp"], epsilon=0.05, dp_partner=False, select_chance=0.0)) != \
        "faro-dp-eps0.05-s0-ab8b87eef0"
    assert run_id_for(FaroConfig(constraints=["dp"], epsilon=0.05)) != "faro-dp-eps0.05-s0-ab8b87eef0"
    assert run_id_for(FaroConfig(constraints=["dp"], epsilon=0.05, average=0.99)) != "faro-dp-eps0.05-s0-ab8b87eef0"


def test_grid_counts() -> None:
    spec = SweepSpec(base=BASE, kinds=["dp", "cf"], epsilons=[0.1, 0.05], seeds=[0, 1],
                     baselines=["bt", "expgrad", "fixed_lambda"])
    cfgs = grid(spec)
    methods = pd.Series([c.method for c in cfgs]).value_counts().to_dict()
    # faro 2x2x2; bt 2 seeds; expgrad dp only (cf unsupported) 2 eps x 2 seeds; fixed_lambda 2 kinds x 2 lambdas x 2
    assert methods == {"faro": 8, "bt": 2, "expgrad": 4, "fixed_lambda": 8}
    assert len({run_id_for(c) for c in cfgs}) == len(cfgs)


def test_pareto_front_and_hypervolume() -> None:
    acc = np.array([0.9, 0.8, 0.7, 0.85, np.nan])
    viol = np.array([0.5, 0.2, 0.1, 0.6, 0.0])
    assert list(pareto_front(acc, viol)) == [2, 1, 0]  # 3 is dominated by 0; NaN ignored
    # box [0.5, 1] x [0, 1]: (0.1->0.2: 0.2) + (0.2->0.5: 0.3) + (0.5->1: 0.4)
    expect = 0.1 * 0.2 + 0.3 * 0.3 + 0.5 * 0.4
    assert hypervolume(acc, viol) == pytest.approx(expect)
    assert hypervolume(np.array([0.4]), np.array([0.1])) == 0.0  # worse than chance: outside the box
    assert hypervolume(np.array([0.6, 0.9]), np.array([0.1, 0.1])) == pytest.approx(0.4 * 0.9)


def test_an_oracle_is_a_reference_not_a_baseline_faro_must_dominate() -> None:
    """The post-hoc shift reads each response's group (or role) when scoring: its front points that Faro's
    does not dominate are listed apart and do not make faro_dominates_all false; a real baseline's do."""
    from faro_core.results.pareto import pareto_summary

    def row(method: str, constraint: str, eps: float, acc: float, viol: float) -> dict:
        return {"method": method, "constraint": constraint, "epsilon": eps, "fixed_lambda": 1.0, "seed": 0,
                "gold_accuracy": acc, "accuracy": acc, "violation_dp": viol}

    table = pd.DataFrame([row("faro", "dp", 0.05, 0.80, 0.05), row("posthoc", "none", math.inf, 0.82, 0.02),
                          row("bt", "none", math.inf, 0.81, 0.10)])
    dp = pareto_summary(table, kinds=("dp",))["dp"]
    assert dp["families"]["posthoc"]["oracle"] is True and dp["families"]["bt"]["oracle"] is False
    assert [p["family"] for p in dp["oracle_not_dominated_by_faro"]] == ["posthoc"]
    assert [p["family"] for p in dp["not_dominated_by_faro"]] == ["bt"] and dp["faro_dominates_all"] is False
    dp = pareto_summary(table[table["method"] != "bt"], kinds=("dp",))["dp"]
    assert dp["faro_dominates_all"] is True and dp["oracle_not_dominated_by_faro"]


def _mtimes(store: RunStore) -> dict[str, float]:
    return {r.run_id: r.file("model.safetensors").stat().st_mtime for r in store.list()}


def test_sweep_writes_table_and_resume_does_not_redo(tmp_path: Path) -> None:
    spec = SweepSpec(base=BASE, kinds=["dp"], epsilons=[0.1], seeds=[0], baselines=["bt"], name="t", n_boot=10)
    res = run_sweep(spec, tmp_path, workers=2)
    assert res["runs"] == 2 and res["skipped"] == 0
    store = RunStore(tmp_path)
    assert sorted(r.run_id for r in store.list()) == sorted(run_id_for(c) for c in grid(spec))
    for r in store.list():
        assert r.status == "done" and r.file("eval.json").exists() and r.file("certificate.json").exists()
    out = tmp_path / "_sweeps" / "t"
    table = pd.read_parquet(out / "sweep.parquet")
    assert set(table["method"]) == {"faro", "bt"} and table["gold_accuracy"].between(0, 1).all()
    assert (out / "sweep.csv").exists() and "| faro-dp |" in (out / "sweep.md").read_text()
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["reference"] == {"gold_accuracy": 0.5, "violation": 1.0}
    assert "faro-dp" in pareto["dp"]["families"] and "bt" in pareto["dp"]["families"]
    before = _mtimes(store)
    again = run_sweep(spec, tmp_path, workers=1)
    assert again["skipped"] == 2 and _mtimes(store) == before


def test_failed_run_is_retrained(tmp_path: Path) -> None:
    spec = SweepSpec(base=BASE, kinds=[], epsilons=[0.1], seeds=[3], baselines=["bt"], name="f", n_boot=5)
    rid = run_id_for(grid(spec)[0])
    store = RunStore(tmp_path)
    run = store.create(grid(spec)[0].resolved().to_dict(), run_id=rid)
    run.set_status("failed", error="boom")
    res = run_sweep(spec, tmp_path, workers=1)
    assert res["skipped"] == 0 and store.get(rid).status == "done"


def test_plan_run_under_a_named_run_id(tmp_path: Path) -> None:
    """The bench scripts that name their runs (bench/trainer_bbq.py, policy_bbq.py) follow the sweep's rule:
    done is kept, interrupted with a checkpoint resumes, anything else is removed and trained afresh."""
    store = RunStore(tmp_path)
    assert plan_run(BASE, store, "named") == "fresh"
    store.create(BASE.resolved().to_dict(), run_id="named").set_status("failed", error="boom")
    assert plan_run(BASE, store, "named") == "fresh" and not store.has("named")
    run = store.create(BASE.resolved().to_dict(), run_id="named")
    run.set_status("interrupted")
    run.file("checkpoint").mkdir()
    assert plan_run(BASE, store, "named") == "resume"
    run.set_status("done")
    assert plan_run(BASE, store, "named") == "done"
    assert plan_run(BASE, store) == "fresh"  # without the name: the config's own id, another run


def test_sweep_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["sweep", "--constraints", "dp", "--epsilons", "0.1", "--seeds", "0", "--epochs", "2",
            "--min-count", "5", "--runs-dir", str(tmp_path), "--workers", "1", "--n-boot", "5", "--json", "--quiet"]
    if DATA:
        args += ["--data", DATA]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["runs"] == 1 and len(out["run_ids"]) == 1
    assert main([*args[:-2], "--baselines", "nope", "--json"]) == 2  # unknown baseline: user error


def test_ray_executor_shares_the_run_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'faro[ray]')")
    spec = SweepSpec(base=BASE, kinds=[], seeds=[0], baselines=["bt"], name="r", n_boot=5)
    run_sweep(spec, tmp_path, workers=1, executor="local")
    spec2 = SweepSpec(base=BASE, kinds=[], seeds=[0, 1], baselines=["bt"], name="r", n_boot=5)
    started, real_init = [], ray.init
    monkeypatch.setattr(ray, "init", lambda *a, **k: (started.append(1), real_init(*a, **k))[1])
    res = run_sweep(spec2, tmp_path, workers=1, executor="ray")
    assert started, "the ray executor never started Ray"
    assert not ray.is_initialized()  # and shut it down
    assert res["runs"] == 2 and res["skipped"] == 1  # the local executor's run is reused
    assert {r.run_id: r.status for r in RunStore(tmp_path).list()} == {i: "done" for i in res["table"]["run_id"]}


def test_redraw_data_gives_each_seed_its_own_data_seed():
    """--redraw-data: seed s trains on data seed s (its own split and skewed items), Faro and baselines alike;
    without it every seed shares the base's data seed."""
    from faro_core.studies.grid import SweepSpec, grid

    base = FaroConfig(data="demo-mini", data_seed=7)
    spec = SweepSpec(base=base, kinds=["dp"], epsilons=[0.05], seeds=[0, 3], baselines=["bt"], redraw_data=True)
    assert sorted((c.method, c.seed, c.data_seed) for c in grid(spec)) == [
        ("bt", 0, 0), ("bt", 3, 3), ("faro", 0, 0), ("faro", 3, 3)]
    shared = SweepSpec(base=base, kinds=["dp"], epsilons=[0.05], seeds=[0, 3], baselines=["bt"])
    assert {c.data_seed for c in grid(shared)} == {7}
