"""Evaluation, certificate and audit of a trained run: numbers, files, CLI and its exit codes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from faro_core.cli import main
from faro_core.evaluate.metrics import brier_score, calibration, ece_score, evaluate_run, scores_for_data
from faro_core.paths import DEMO_MINI_DIR, SHARED_DATA
from faro_core.store.runs import RunStore
from faro_core.train import FaroConfig, train

DATA = "demo-mini"  # 512 shipped items: trainer mechanics, not the demo's findings
# tracked data: its absence is a broken checkout, a failure (tests/test_data.py), never a skip
assert DEMO_MINI_DIR.is_dir(), f"the tracked mini demo {DEMO_MINI_DIR} is missing"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunStore, str]:
    store = RunStore(tmp_path_factory.mktemp("runs"))
    cfg = FaroConfig(data=DATA, constraints=["dp"], epsilon=0.1, epochs=3, head_hidden=16, min_count=5, seed=0)
    run = train(cfg, store, run_id="ev-dp", progress=False)
    return store, run.run_id


def test_eval_matches_trainer_metrics_and_writes_eval_json(trained: tuple[RunStore, str]) -> None:
    store, rid = trained
    run = store.get(rid)
    res = evaluate_run(run, n_boot=30, seed=1)
    test = run.metrics()["test"]
    m = res["metrics"]
    assert m["accuracy"]["value"] == pytest.approx(test["accuracy"], abs=1e-6)
    assert m["gold_accuracy"]["value"] == pytest.approx(test["gold_accuracy"], abs=1e-6)
    for k, v in test["violation"].items():
        assert m[f"violation_{k}"]["value"] == pytest.approx(v, abs=1e-5)
    for k in ("accuracy", "gold_accuracy", "ece", "brier"):
        assert m[k]["lo"] <= m[k]["value"] + 1e-9 and m[k]["value"] <= m[k]["hi"] + 1e-9, k
    assert {k: res["bootstrap"][k] for k in ("n", "seed", "level", "unit")} == {"n": 30, "seed": 1, "level": 0.95,
                                                                                   "unit": "item"}
    assert res["bootstrap"]["method"].startswith("BCa")
    assert any("ece" in g for g in res["by_group"].values())
    saved = json.loads(run.file("eval.json").read_text())
    assert saved["metrics"]["accuracy"]["value"] == m["accuracy"]["value"]
    again = evaluate_run(run, n_boot=30, seed=1, write=False)
    assert again["metrics"]["accuracy"]["lo"] == m["accuracy"]["lo"]  # seeded bootstrap
    # the chance level of each estimable DP/EO violation: same observed value, a floor, a p-value
    for k, c in res["chance"].items():
        if c["observed"] == c["observed"]:
            assert c["observed"] == pytest.approx(m[f"violation_{k}"]["value"], abs=1e-5)
            assert 0 < c["p_value"] <= 1 and c["chance_median"] <= c["chance_p90"]
    from faro_core.results.views import chance_lines

    # min_count 5: cells exist, and some kind measures a gap (on the demo's test split DP is 0 for every
    # group, so the comparisons above would hold trivially if EO had nothing either)
    assert any(c["observed"] > 0 and 0 < c["chance_median"] for c in res["chance"].values())
    lines = chance_lines(run)
    shown = [c for c in res["chance"].values() if c["chance_median"] == c["chance_median"]]
    assert len(lines) == len(shown)
    for line, c in zip(lines, shown):  # each sentence carries its kind's own numbers
        assert f"violation {c['observed']:.3f}" in line and f"show {c['chance_median']:.3f}" in line
        assert f"p = {c['p_value']:.2f}" in line


def test_ece_and_brier_known_values() -> None:
    y = np.array([1, 0, 1, 0])
    assert ece_score(y, np.array([1.0, 0.0, 1.0, 0.0])) == 0.0
    assert ece_score(np.array([1, 1, 0, 0]), np.full(4, 0.5)) == 0.0  # calibrated on average in its bin
    assert ece_score(np.ones(4), np.full(4, 0.5)) == pytest.approx(0.5)
    assert brier_score(y, np.full(4, 0.5)) == pytest.approx(0.25)
    cal = calibration(np.ones(4), np.array([0.5, 0.5, 1.0, 1.0]), np.array(["a", "a", "b", "b"]))
    assert cal["by_group"]["a"]["ece"] == pytest.approx(0.5) and cal["by_group"]["b"]["ece"] == 0.0


def test_rescoring_with_load_scorer_matches_scores_parquet(trained: tuple[RunStore, str]) -> None:
    store, rid = trained
    run = store.get(rid)
    held_out = evaluate_run(run, n_boot=5)["metrics"]  # the run's own eval.json, before the external one
    ext = scores_for_data(run, DATA or "demo", limit=60, seed=0)
    saved = pd.read_parquet(run.file("scores.parquet")).set_index("pair_id")
    s = saved.loc[ext["pair_id"]]
    assert np.allclose(ext["r_chosen"].to_numpy(), s["r_chosen"].to_numpy(), atol=1e-4)
    assert np.allclose(ext["cf_r_rejected"].to_numpy(), s["cf_r_rejected"].to_numpy(), atol=1e-4, equal_nan=True)
    res = evaluate_run(run, data=DATA or "demo", limit=60, n_boot=10)
    assert res["pairs"] == 60
    stored = json.loads(run.file("eval.json").read_text())
    assert str(DATA or "demo") in stored["external"]
    assert stored["metrics"] == json.loads(json.dumps(held_out))  # the held-out result is kept, unchanged


def test_certify_run_writes_certificate(trained: tuple[RunStore, str], capsys: pytest.CaptureFixture) -> None:
    store, rid = trained
    rc = main(["certify", rid, "--runs-dir", str(store.root), "--delta", "0.05", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["kinds"] == ["dp"] and out["epsilon"] == 0.1 and isinstance(out["certified"], bool)
    assert out["bounds"] and all(b["upper"] >= b["empirical"] for b in out["bounds"])
    assert out["certified"] == all(b["upper"] <= 0.1 for b in out["bounds"])
    assert json.loads(store.get(rid).file("certificate.json").read_text())["m"] == out["m"]
    # the certified path end to end: at a slack above every bound the certificate must say certified
    loose = max(b["upper"] for b in out["bounds"]) + 0.01
    assert main(["certify", rid, "--runs-dir", str(store.root), "--epsilon", f"{loose}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["certified"] is True and all(b["slack"] > 0 for b in out["bounds"])


def test_certify_bound_flag_names_each_rows_bound(trained: tuple[RunStore, str],
                                                 capsys: pytest.CaptureFixture) -> None:
    """--bound picks the DP/EO bound; each row names it, keeps its lower bound below its upper bound and says
    how many held-out members would certify eps; the default is Clopper-Pearson; the text output names it."""
    store, rid = trained
    rows = {}
    for bound in ("clopper-pearson", "bernstein", "hoeffding"):
        assert main(["certify", rid, "--runs-dir", str(store.root), "--bound", bound, "--json"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["bound"] == bound and all(b["bound"] == bound for b in out["bounds"])
        assert all(b["lower"] <= b["empirical"] <= b["upper"] for b in out["bounds"])
        assert all("n_to_certify" in b for b in out["bounds"]) and "n_heldout_to_certify" in out
        rows[bound] = [b["upper"] for b in out["bounds"]]
    assert rows["clopper-pearson"] != rows["hoeffding"]
    assert main(["certify", rid, "--runs-dir", str(store.root)]) == 0
    text = capsys.readouterr().out
    assert "clopper-pearson bounds" in text and "n to certify" in text
    assert json.loads(store.get(rid).file("certificate.json").read_text())["bound"] == "clopper-pearson"


@pytest.mark.parametrize("cmd", ["eval", "certify", "audit"])
@pytest.mark.parametrize("rid", ["no-such-run", "../etc", "a/b"])
def test_unknown_or_unsafe_run_id_exits_2(trained: tuple[RunStore, str], cmd: str, rid: str,
                                          capsys: pytest.CaptureFixture) -> None:
    store, _ = trained
    extra = ["--crows", "x.csv"] if cmd == "audit" else []
    assert main([cmd, rid, "--runs-dir", str(store.root), *extra]) == 2
    err = capsys.readouterr().err
    assert "faro: error:" in err and "Traceback" not in err


def test_eval_cli_json(trained: tuple[RunStore, str], capsys: pytest.CaptureFixture) -> None:
    store, rid = trained
    assert main(["eval", rid, "--runs-dir", str(store.root), "--n-boot", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["run_id"] == rid and out["split"] == "test" and "violation_dp" in out["metrics"]


@pytest.mark.skipif(not (SHARED_DATA / "crows_pairs").exists() or not (SHARED_DATA / "hh_rlhf").exists(),
                    reason="../shared/data/crows_pairs or hh_rlhf absent")
def test_audit_crows_and_hh_cached(trained: tuple[RunStore, str], tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    store, rid = trained
    crows = pd.read_csv(SHARED_DATA / "crows_pairs" / "crows_pairs_anonymized.csv").head(40)
    crows.to_csv(tmp_path / "crows.csv", index=False)
    with gzip.open(SHARED_DATA / "hh_rlhf" / "helpful-base" / "test.jsonl.gz", "rt") as fh:
        lines = [next(fh) for _ in range(12)]
    (tmp_path / "hh").mkdir()
    (tmp_path / "hh" / "test.jsonl").write_text("".join(lines))
    args = ["audit", rid, "--runs-dir", str(store.root), "--crows", str(tmp_path / "crows.csv"),
            "--hh", str(tmp_path / "hh"), "--hh-limit", "0", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rate = out["crows"]["stereotype_rate"]
    assert rate["n"] == 40 and 0 <= rate["lo"] <= rate["value"] <= rate["hi"] <= 1
    assert sum(v["n"] for v in out["crows"]["by_bias_type"].values()) == 40
    assert out["hh"]["accuracy"]["n"] == 12
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["crows"].get("cached") and again["hh"].get("cached")
    assert again["crows"]["stereotype_rate"] == rate


def test_every_reported_interval_contains_its_estimate_or_says_why(trained: tuple[RunStore, str]) -> None:
    """Issue #19: BCa intervals (scipy.stats.bootstrap) for every metric, overall and per group."""
    store, rid = trained
    res = evaluate_run(store.get(rid), n_boot=60, seed=2, write=False)
    rows = list(res["metrics"].items()) + [(f"{g}:{k}", v) for g, sub in res["by_group"].items()
                                           for k, v in sub.items() if isinstance(v, dict)]
    assert any(":ece" in k for k, _ in rows)
    checked = 0
    for name, v in rows:
        if v["value"] != v["value"]:  # no estimate (a kind with no estimable cell)
            continue
        assert v["lo"] <= v["value"] <= v["hi"] or v.get("why"), (name, v)
        checked += 1
    assert checked >= 6 and any(v.get("method") == "BCa" for _, v in rows)
