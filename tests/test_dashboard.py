"""Dashboard pages (streamlit AppTest), the demo builder, the launcher and the HTML report.

One tiny demo sweep (BT + Faro-DP + Faro-CF, 2 epochs, head mode) is built once into a temporary run
store; policy results are computed with a uniform π_ref (no LM) and a few synthetic generations.
"""

from __future__ import annotations

import html
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["app.py", "pages/1_Data.py", "pages/2_Train.py", "pages/3_Pareto.py", "pages/4_Groups.py",
         "pages/5_Policy.py", "pages/6_Report.py"]

pytest.importorskip("streamlit")


def _add_policy(store) -> None:  # noqa: ANN001
    """policy.json with a uniform reference policy (no LM), plus small synthetic generations."""
    from faro_core.policy.evaluate import evaluate_policies, load_items, select_items, write_policy

    runs = store.list()
    items = select_items(load_items("demo"), runs, split="test", seed=0, limit=40)
    log_ref = np.full((len(items), 3), np.log(1 / 3))
    result = evaluate_policies(runs, items, betas=[0.3, 1.0, 3.0, float("inf")], log_ref=log_ref)
    write_policy(runs, result)
    rng = np.random.default_rng(0)
    for run in runs:
        n = 8
        df = pd.DataFrame({"prompt_idx": np.repeat([0, 1], 4), "user_text": np.repeat(["Who was forgetful?",
                                                                                      "Who was rude?"], 4),
                           "text": [f"answer {i}" for i in range(n)], "mention": ["target", "other"] * 4,
                           "reward": rng.normal(size=n)})
        df["best_of_n"] = df.groupby("prompt_idx")["reward"].transform(lambda r: r == r.max())
        df.to_parquet(run.file("policy_generations.parquet"))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from faro_core.store.runs import RunStore
    from faro_core.studies.demo import build_demo, demo_specs

    root = tmp_path_factory.mktemp("runs")
    old = os.environ.get("FARO_RUNS_DIR")
    os.environ["FARO_RUNS_DIR"] = str(root)
    store = RunStore(root)
    specs = demo_specs(epsilons=(0.05,), constraints=("dp", "cf"), epochs=2)
    out = build_demo(store, specs, policy=False)
    assert sorted(out["built"]) == sorted(s.run_id for s in specs)
    _add_policy(store)
    yield root
    if old is None:
        os.environ.pop("FARO_RUNS_DIR", None)
    else:
        os.environ["FARO_RUNS_DIR"] = old


def _app(page: str):  # noqa: ANN202
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "dashboard" / page), default_timeout=60)


def _ok(at) -> None:  # noqa: ANN001
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_demo_is_idempotent(runs_dir: Path) -> None:
    from faro_core.store.runs import RunStore
    from faro_core.studies.demo import build_demo, demo_specs

    out = build_demo(RunStore(runs_dir), demo_specs(epsilons=(0.05,), constraints=("dp", "cf"), epochs=2),
                     policy=False)
    assert out["built"] == [] and len(out["kept"]) == 3
    assert {"demo-bt-s0", "demo-faro-dp-eps0.05-s0", "demo-faro-cf-eps0.05-s0"} <= set(os.listdir(runs_dir))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(runs_dir: Path, page: str) -> None:
    at = _app(page).run()
    _ok(at)


def test_pages_have_their_widgets(runs_dir: Path) -> None:
    at = _app("pages/1_Data.py").run()
    assert at.radio[0].options == ["demo data", "folder or file path", "upload", "hub id"]
    assert at.slider[0].label.startswith("Skew")
    assert any(m.label == "pairs" for m in at.metric)
    at = _app("pages/3_Pareto.py").run()
    assert any(o.startswith("demo-faro-dp-eps0.05-s0") for o in at.selectbox[2].options)
    at = _app("pages/4_Groups.py").run()
    assert [o.split(" ")[0] for o in at.selectbox[0].options] == ["demo-bt-s0"]
    at = _app("pages/5_Policy.py").run()
    assert at.select_slider[0].options  # β values
    _ok(at)


def test_data_page_reports_bad_path(runs_dir: Path) -> None:
    at = _app("pages/1_Data.py").run()
    at.radio[0].set_value("folder or file path").run()
    at.text_input(key="data_path").set_value("/no/such/file.csv").run()
    assert at.error and "not found" in at.error[0].value
    assert not at.exception


def test_upload_limits(tmp_path: Path) -> None:
    from faro_core.errors import DataError
    from faro_core.store.uploads import save_upload

    with pytest.raises(DataError, match="upload limit"):
        save_upload("big.csv", b"x" * 2048, tmp_path, max_mb=0.001)
    with pytest.raises(DataError, match="unsupported file type"):
        save_upload("data.xlsx", b"abc", tmp_path)
    with pytest.raises(DataError, match="not a Parquet"):
        save_upload("data.parquet", b"abc", tmp_path)
    p = save_upload("ok.csv", b"prompt,chosen,rejected\na,b,c\n", tmp_path)
    assert p.exists() and p.suffix == ".csv"


def test_train_page_launch_finishes_and_shows_on_pareto(runs_dir: Path) -> None:
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    at = _app("pages/2_Train.py").run()
    _ok(at)
    at.multiselect[0].set_value(["BT (none)"])
    at.number_input[0].set_value(1)
    at.button[0].click().run()
    _ok(at)
    assert at.success, "no launch confirmation"
    store = RunStore(runs_dir)
    rows = launch.queue(store)
    assert len(rows) == 1, "one launch, one run"
    run_id = rows[0]["run_id"]
    assert launch.wait(store, run_id, timeout_s=240) == "done", launch.log_tail(store, run_id)
    cfg = store.get(run_id).config  # what the form said reached the run
    assert (cfg["epochs"], cfg["method"], cfg["constraints"]) == (1, "bt", []), cfg
    at = _app("pages/3_Pareto.py").run()
    _ok(at)
    assert any(o.startswith(run_id) for o in at.selectbox[2].options)


def test_cancel_marks_interrupted(runs_dir: Path, tmp_path: Path) -> None:
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    store = RunStore(tmp_path / "cancel")
    run_id = launch.launch_train(store, constraint="dp", epsilon=0.05, epochs=50)
    assert launch.cancel(store, run_id) == "interrupted"  # at once: during start-up
    assert not launch.queue(store)[0]["alive"]


def test_cancel_mid_training_keeps_the_checkpoint_and_resumes(tmp_path: Path) -> None:
    """Cancelled from the dashboard's queue after its first checkpoint: the run reads interrupted, its
    checkpoint and history survive, and ``faro train --resume`` finishes it with one row per step."""
    from faro_core.cli import main as faro_main
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    store = RunStore(tmp_path / "cancel-mid")
    run_id = launch.launch_train(store, constraint="dp", epsilon=0.05, epochs=400)
    state = store.path(run_id) / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not state.exists():
        time.sleep(0.01)
    assert state.exists(), launch.log_tail(store, run_id)
    assert launch.cancel(store, run_id) == "interrupted"
    run = store.get(run_id)
    saved = json.loads(state.read_text())["step"]
    total = run.progress()["total_steps"]
    assert 0 < saved < total and run.history(), "cancelled before or after the training loop"
    assert faro_main(["train", "--resume", run_id, "--runs-dir", str(store.root), "--quiet"]) == 0
    assert run.status == "done"
    assert [h["step"] for h in run.history()] == list(range(1, total + 1))


def test_report_page_and_cli(runs_dir: Path, tmp_path: Path) -> None:
    at = _app("pages/6_Report.py").run()
    _ok(at)
    buttons = at.get("download_button")
    assert buttons and "report" in buttons[0].proto.label.lower()
    from faro_core.evaluate.metrics import evaluate_run
    from faro_core.results.views import chance_lines
    from faro_core.store.runs import RunStore

    run = RunStore(runs_dir).get("demo-faro-dp-eps0.05-s0")
    evaluate_run(run, n_boot=5)  # writes eval.json, with the chance level of each estimable violation
    lines = chance_lines(run)
    assert lines  # the demo's test cells (min_count 10) are estimable
    out = tmp_path / "report.html"
    env = {**os.environ, "FARO_RUNS_DIR": str(runs_dir)}
    res = subprocess.run([sys.executable, "-m", "faro_core", "report", "all", "--out", str(out), "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["out"] == str(out)
    text = out.read_text()
    assert "<script src=" not in text  # plotly inline, no CDN
    assert "Summary" in text and "demo-faro-dp-eps0.05-s0" in text and "Certificates" in text
    assert "Are the gaps more than chance?" in text and html.escape(lines[0]) in text
    res = subprocess.run([sys.executable, "-m", "faro_core", "report", "nope", "--out", str(out)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 2 and "unknown run" in res.stderr
