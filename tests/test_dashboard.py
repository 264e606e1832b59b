"""Dashboard pages (streamlit AppTest), the demo builder, the launcher and the HTML report.

One tiny demo sweep (BT + Faro-DP + Faro-CF, 2 epochs, head mode) is built once into a temporary run
store; policy results are computed with a uniform π_ref (no LM) and a few synthetic generations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from markupsafe import escape  # the report's templates escape as Jinja2 does

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
    ids = {"demo-bt-s0", "demo-faro-dp-eps0.05-s0", "demo-faro-cf-eps0.05-s0"}
    assert ids <= set(os.listdir(runs_dir))
    # the first build trained its runs as one batch of the engine
    assert all(sorted(RunStore(runs_dir).get(r).raw_status()["batch"]) == sorted(ids) for r in ids)


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
    assert at.multiselect(key="w-kinds").options == ["DP", "EO", "CF"]
    assert at.multiselect(key="w-baselines").options[0] == "BT"
    at.multiselect(key="w-kinds").set_value([])
    at.multiselect(key="w-baselines").set_value(["bt"])
    at.number_input(key="w-epochs").set_value(1)
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
    run_id = launch.launch_train(store, constraint="dp", epsilon=0.05, epochs=50, data="demo-mini")
    assert launch.cancel(store, run_id) == "interrupted"  # at once: during start-up
    assert not launch.queue(store)[0]["alive"]


def test_cancel_mid_training_keeps_the_checkpoint_and_resumes(tmp_path: Path) -> None:
    """Cancelled from the dashboard's queue after its first checkpoint: the run reads interrupted, its
    checkpoint and history survive, and ``faro train --resume`` finishes it with one row per step."""
    from faro_core.cli import main as faro_main
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    store = RunStore(tmp_path / "cancel-mid")
    run_id = launch.launch_train(store, constraint="dp", epsilon=0.05, epochs=400, data="demo-mini")
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
    assert "Are the gaps more than chance?" in text and escape(lines[0]) in text
    res = subprocess.run([sys.executable, "-m", "faro_core", "report", "nope", "--out", str(out)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert res.returncode == 2 and "unknown run" in res.stderr


# ---------------------------------------------------------------------------------------------- issue 18
def test_sidebar_opens_on_overview() -> None:
    """The entry point declares the pages itself, Overview first, so the sidebar's first item reads Overview."""
    sys.path.insert(0, str(ROOT / "dashboard"))
    src = (ROOT / "dashboard" / "app.py").read_text()
    assert "st.navigation" in src
    at = _app("app.py").run()
    _ok(at)
    assert at.title[0].value.startswith("Faro")


def test_group_names_in_words_with_sizes_and_a_users_map(tmp_path: Path) -> None:
    from faro_core.data.labels import group_caption, group_label, label_map, parse_label_map, save_label_map
    from faro_core.errors import DataError

    assert group_label("F") == "women" and group_label("old") == "older adults"
    assert group_label("LatinSouthAmerica") == "people from Latin / South America"
    assert group_label("SomeNewTag") == "Some New Tag"  # unknown tags are split into words, never dropped
    assert group_caption("F", 64) == "women (n=64)" and group_caption("Sikh", 4) == "Sikhs (n=4, small)"
    user = parse_label_map("names.csv", b"tag,label\nF,female respondents\nX,group X\n")
    assert user == {"F": "female respondents", "X": "group X"}
    assert parse_label_map("names.json", b'{"M": "male respondents"}') == {"M": "male respondents"}
    save_label_map(tmp_path, user)
    labels = label_map(tmp_path)
    assert labels["F"] == "female respondents" and labels["old"] == "older adults"
    for name, data, match in [("m.csv", b"a,b\n1,2\n", "tag,label"), ("m.json", b"[1]", "JSON object"),
                              ("m.txt", b"x", ".json or .csv"), ("m.json", b"", "empty"),
                              ("m.csv", b"tag,label\nF,\n", "non-empty")]:
        with pytest.raises(DataError, match=match):
            parse_label_map(name, data)


def test_groups_page_names_groups_in_words_with_n(runs_dir: Path) -> None:
    at = _app("pages/4_Groups.py").run()
    _ok(at)
    shown = list(at.multiselect[0].options)  # AppTest lists the formatted options
    from faro_core.data.labels import BBQ_GROUP_LABELS

    assert shown and all(" (n=" in s for s in shown)  # every group with its size
    assert not any(s.split(" (")[0] in BBQ_GROUP_LABELS for s in shown)  # no raw BBQ tag: words
    small = [s for s in shown if s.endswith(", small)")]
    if small:  # flagged and kept, with a warning naming how many
        assert at.warning and "not left out" in at.warning[0].value


def test_one_colour_per_method_on_every_page_and_in_the_report(runs_dir: Path) -> None:
    from faro_core import results as explore
    from faro_core.results import plots as pg
    from faro_core.store.runs import RunStore

    table = explore.run_table(RunStore(runs_dir))
    sc = explore.load_scores(RunStore(runs_dir).get("demo-bt-s0"))
    rr = explore.response_rewards(sc)
    violin = pg.violin_before_after({"BT (demo-bt-s0)": rr, "Faro-DP (x)": rr})
    bars = pg.group_accuracy_bars({"BT (demo-bt-s0)": explore.group_accuracy(sc), "Faro-DP (x)":
                                   explore.group_accuracy(sc)})
    front = pg.pareto_figure(explore.pareto_points(table, "dp"), "dp")
    fronts = pg.fronts_figure(explore.constraint_fronts(table))
    frame = pd.DataFrame({"model": ["demo-bt-s0"] * 2, "beta": [1.0, 2.0], "s_amb": [0.1, 0.2]})
    policy = pg.policy_figure(frame, colors={"demo-bt-s0": pg.method_color("BT")})
    sweep_front = pg.pareto_figure(explore.sweep_points(pd.DataFrame({
        "method": ["bt", "faro"], "constraint": ["none", "dp"], "epsilon": [float("inf"), 0.05],
        "fixed_lambda": [1.0, 1.0], "seed": [0, 0], "gold_accuracy": [0.8, 0.79], "violation_dp": [0.2, 0.05]}),
        "dp"), "dp")

    def colours(fig, name):  # noqa: ANN001, ANN202
        out = set()
        for t in fig.data:
            if name in str(t.name):
                m = getattr(t, "marker", None)
                line = getattr(t, "line", None)
                c = (m.color if m is not None and isinstance(m.color, str) else None) or \
                    (line.color if line is not None else None)
                if c:
                    out.add(c)
        return out

    bt = pg.method_color("BT")
    assert colours(violin, "BT") == colours(bars, "BT") == colours(front, "BT") == colours(policy, "demo-bt") \
        == colours(fronts, "BT") == colours(sweep_front, "BT") == {bt}
    assert colours(violin, "Faro-DP") == colours(front, "Faro-DP") == colours(sweep_front, "Faro-DP") \
        == {pg.method_color("Faro-DP")} != {bt}
    assert pg.method_color("Faro-DP+CF") == pg.method_color("Faro-DP")
    assert pg.method_color("Some new baseline") == pg.method_color("Some new baseline")  # not hash()-random


def test_fronts_side_by_side_share_the_accuracy_axis(runs_dir: Path) -> None:
    from faro_core import results as explore
    from faro_core.results import plots as pg
    from faro_core.store.runs import RunStore

    table = explore.run_table(RunStore(runs_dir))
    fronts = explore.constraint_fronts(table)
    assert set(fronts["kind"]) >= {"dp", "cf"}
    dp = fronts[fronts["kind"] == "dp"]
    assert set(dp["family"]) == {"BT", "Faro-DP"}  # Faro-CF runs are in their own panel, BT in every one
    # each run also shows its violation of the other notions: the Faro-DP point's CF violation is its run's
    faro_dp = dp[dp["family"] == "Faro-DP"].iloc[0]
    row = table[table["run_id"] == faro_dp["run_ids"][0]].iloc[0]
    split = faro_dp["split"]
    assert faro_dp["other_cf"] == pytest.approx(row[explore.split_columns(split, "cf")[0]])
    fig = pg.fronts_figure(fronts)
    axes = [k for k in fig.layout.to_plotly_json() if k.startswith("xaxis")]
    assert len(axes) == fronts["kind"].nunique()
    assert all(t.yaxis in ("y", None) or fig.layout[t.yaxis.replace("y", "yaxis")].matches == "y"
               for t in fig.data)  # one shared accuracy axis
    ids = {cd[0] for t in fig.data if t.customdata is not None for cd in t.customdata}
    assert faro_dp["run_ids"][0] in ids
    cross = explore.cross_violations(table)
    assert {"viol_dp", "viol_eo", "viol_cf"} <= set(cross.columns) and len(cross) == (table["status"] == "done").sum()


def test_selecting_a_point_opens_its_run(runs_dir: Path) -> None:
    """AppTest cannot click plotly points: the selection callback gets the selection state a click makes."""
    from streamlit.testing.v1 import AppTest

    from faro_core import results as explore
    from faro_core.results import plots as pg
    from faro_core.store.runs import RunStore

    fig = pg.fronts_figure(explore.constraint_fronts(explore.run_table(RunStore(runs_dir))))
    trace = next(t for t in fig.data if t.name == "Faro-DP")
    point = {"curve_number": 0, "point_index": 0, "x": float(trace.x[0]), "y": float(trace.y[0]),
             "customdata": list(trace.customdata[0])}
    state = {"selection": {"points": [point], "point_indices": [0], "box": [], "lasso": []}}
    assert explore.selected_run(state) == trace.customdata[0][0]
    assert explore.selected_run({"selection": {"points": [], "box": [], "lasso": []}}) is None

    def script(state: dict, dashboard: str) -> None:  # runs as its own Streamlit script
        import sys

        import streamlit as st

        sys.path.insert(0, dashboard)
        from common import open_selected

        st.session_state["fronts"] = state
        open_selected("fronts")
        st.write(st.session_state.get("open_run"))

    at = AppTest.from_function(script, args=(state, str(ROOT / "dashboard")), default_timeout=30).run()
    assert at.session_state["open_run"] == trace.customdata[0][0]
    # the Pareto page then opens that run
    at = _app("pages/3_Pareto.py")
    at.session_state["open_run"] = trace.customdata[0][0]
    at.run()
    _ok(at)
    assert at.selectbox(key="open_run_pick").value == trace.customdata[0][0]
    assert any(trace.customdata[0][0] in s.value for s in at.subheader)


def test_report_small_with_plotly_once_and_each_runs_certificate(runs_dir: Path) -> None:
    from faro_core.results.report import build_report
    from faro_core.store.runs import RunStore

    store = RunStore(runs_dir)
    text = build_report(store, [r.run_id for r in store.list()])
    assert len(text.encode()) <= 1_500_000, len(text.encode())
    assert text.count("id='faro-plotly-gz'") == 1 and "<script src=" not in text
    assert text.count("class='faro-fig-spec'") >= 3  # the fronts, per-group views, policy
    assert "Constraint types side by side" in text and "bound: <b>" in text and "95% interval" in text
    cfg = json.dumps(store.get("demo-faro-dp-eps0.05-s0").config, indent=1, sort_keys=True, default=str)
    assert escape(cfg) in text  # each run's config
    from faro_core.data.labels import group_label, label_map

    groups = (store.get("demo-bt-s0").read("data.json") or {}).get("groups") or {}
    labels = label_map(store.root)
    for tag in groups:  # the data table names each group in words, its tag beside
        assert f"<td>{escape(group_label(tag, labels))}</td><td>{escape(str(tag))}</td>" in text


def test_report_page_previews_inline(runs_dir: Path) -> None:
    at = _app("pages/6_Report.py").run()
    _ok(at)
    frames = at.get("iframe")
    assert frames and "faro-plotly-gz" in frames[0].proto.srcdoc
    assert "MB" in at.caption[1].value and "faro report" in at.caption[1].value


def test_train_page_shows_compute_and_where_runs_go(runs_dir: Path) -> None:
    at = _app("pages/2_Train.py").run()
    _ok(at)
    labels = {m.label: m.value for m in at.metric}
    assert int(labels["CPU cores"]) >= 1 and "CUDA devices" in labels and "Ray cluster" in labels
    where = at.radio[0]
    assert where.label == "Where" and where.options == ["this machine's CPU", "this machine's GPU (full mode, bf16)",
                                                         "the Ray cluster (RAY_ADDRESS)"]
    assert any(c.label.startswith("Combine") for c in at.checkbox)
    import torch

    if not torch.cuda.is_available():  # choosing a GPU this machine lacks: a clear error, no launch
        where.set_value("local-gpu")  # a form: the value is sent with the submit
        at.button[0].click().run()
        assert at.error and "no CUDA device" in at.error[0].value and not at.exception


def test_launch_plans_combine_constraints_and_refuse_missing_gpus() -> None:
    from faro_core.errors import FaroError
    from faro_core.studies.grid import SweepSpec, grid
    from faro_core.train import launch
    from faro_core.train.config import FaroConfig

    def plan(**kw: object) -> list[tuple[object, ...]]:  # the Train page's grid: a SweepSpec
        return [(c.method, c.constraints, c.epsilon, c.seed) for c in grid(SweepSpec(base=FaroConfig(), **kw))]

    combined = plan(kinds=["dp", "eo"], epsilons=[0.05, 0.1], seeds=[0, 1], baselines=["bt"], combine=True)
    assert sorted(r for r in combined if r[0] == "faro") == [
        ("faro", ["dp", "eo"], e, s) for e in (0.05, 0.1) for s in (0, 1)]
    assert sorted(r[3] for r in combined if r[0] == "bt") == [0, 1]  # BT once per seed
    assert [r[1] for r in plan(kinds=["dp", "eo"], epsilons=[0.05])] == [["dp"], ["eo"]]  # apart by default
    with pytest.raises(FaroError, match="unknown constraint"):
        plan(kinds=["dp", "xx"], epsilons=[0.05])
    cfg = launch.launch_config(constraint="dp,eo", groups=["F", "M"])  # what a combined plan row launches
    assert cfg.constraints == ["dp", "eo"] and cfg.groups == ["F", "M"]
    import torch

    if not torch.cuda.is_available():
        from faro_core.store.runs import RunStore

        with pytest.raises(FaroError, match="no CUDA device"):
            launch.launch_train(RunStore("/tmp/faro-no-gpu-store"), target="local-gpu")


def test_two_sessions_launch_at_once_and_both_finish(runs_dir: Path, tmp_path: Path) -> None:
    """Two browser sessions (two AppTests, each its own session state) press Launch at the same moment:
    both runs finish, each once, and the store stays consistent."""
    import threading

    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    root = tmp_path / "two-sessions"
    sessions = []
    for _ in range(2):
        at = _app("pages/2_Train.py")
        at.session_state["runs_dir"] = str(root)
        at.run()
        at.multiselect(key="w-kinds").set_value([])
        at.multiselect(key="w-baselines").set_value(["bt"])
        at.number_input(key="w-epochs").set_value(1)
        sessions.append(at)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def press(at) -> None:  # noqa: ANN001
        try:
            barrier.wait()
            at.button[0].click().run()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=press, args=(at,)) for at in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for at in sessions:
        _ok(at)
        assert at.success
    store = RunStore(root)
    rows = launch.queue(store)
    assert len(rows) == 2 and len({r["run_id"] for r in rows}) == 2
    for r in rows:
        assert launch.wait(store, r["run_id"], timeout_s=240) == "done", launch.log_tail(store, r["run_id"])
    assert sorted(r.run_id for r in store.list()) == sorted(r["run_id"] for r in rows)
    assert all(r.status == "done" and r.file("metrics.json").exists() for r in store.list())


def test_generations_compared_side_by_side_with_filters(runs_dir: Path) -> None:
    from faro_core.policy import compare
    from faro_core.store.runs import RunStore

    store = RunStore(runs_dir)
    runs = [store.get("demo-bt-s0"), store.get("demo-faro-dp-eps0.05-s0")]
    ch = compare.stored_choices(runs)
    assert set(ch["model"]) == {r.run_id for r in runs} and len(ch) == 2 * ch["prompt_idx"].nunique()
    for _, g in ch.groupby("prompt_idx"):  # each model's pick is its own best-of-n among the shared samples
        for _, row in g.iterrows():
            gen = pd.read_parquet(store.get(row["model"]).file("policy_generations.parquet"))
            mine = gen[gen["prompt_idx"] == row["prompt_idx"]]
            assert row["text"] == mine.loc[mine["reward"].idxmax(), "text"]
        assert g["differs"].nunique() == 1 and g["differs"].iloc[0] == (g["text"].nunique() > 1)
    assert set(compare.filter_choices(ch, mentions=["target"])["mention"]) >= {"target"} or \
        compare.filter_choices(ch, mentions=["target"]).empty
    assert compare.filter_choices(ch, only_differing=True)["differs"].all()
    at = _app("pages/5_Policy.py").run()
    _ok(at)
    assert [m.label for m in at.multiselect][1:] == ["Category", "Group named by a choice"]
    at.checkbox[0].check().run()  # only where choices differ
    _ok(at)


def test_typed_prompt_is_sampled_then_reranked_live(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The typed-prompt path with the LM replaced by fixed replies (sampling is the LM's job, tested in
    test_policy): every chosen reward scores the same n replies, with a progress bar, and picks its best."""
    import faro_core.policy.generate as gen

    replies = ["The grandmother struggled.", "The grandson struggled.", "We cannot tell who struggled."]

    def fake_generate(texts, config, lm=None):  # noqa: ANN001, ANN202
        return pd.DataFrame({"prompt_idx": 0, "sample_idx": range(len(replies)), "user_text": texts[0],
                             "text": replies, "n_tokens": 5, "seconds": 0.0})

    monkeypatch.setattr(gen, "generate", fake_generate)
    at = _app("pages/5_Policy.py").run()
    at.text_area(key="typed_prompt").set_value("A grandmother and her grandson were at the bank. Who struggled?")
    next(b for b in at.button if b.label == "Sample and rerank").click().run()
    _ok(at)
    _, samples, choices = at.session_state["typed_result"]
    chosen = [m for m in at.multiselect[0].value]
    assert set(choices["model"]) == set(chosen) and set(choices["text"]) <= set(replies)
    for rid in chosen:
        assert samples[f"best:{rid}"].sum() == 1
        best = samples.loc[samples[f"reward:{rid}"].idxmax(), "text"]
        assert choices.loc[choices["model"] == rid, "text"].iloc[0] == best




def test_story_numbers_follow_from_the_scores(runs_dir: Path) -> None:
    """The Overview's story, checked against the scores by hand: the stereotyped answer's win rate between the two
    people on ambiguous held-out items (ties 1/2), its exact interval, the certificate at Faro's ε, the accuracy
    cost, and examples that show what they claim."""
    from faro_core.results.story import build_story
    from faro_core.results.views import load_scores
    from faro_core.store.runs import RunStore

    store = RunStore(runs_dir)
    story = build_story(store)
    assert (story["bt_run"], story["faro_run"]) == ("demo-bt-s0", "demo-faro-dp-eps0.05-s0")
    for tag, rid in (("bt", story["bt_run"]), ("faro", story["faro_run"])):
        sc = load_scores(store.get(rid))
        amb = sc[sc["context_condition"] == "ambig"]
        wins = []
        for _, g in amb.groupby("item_id"):
            r = {}
            for _, row in g.iterrows():  # each answer's reward, by its index
                r.setdefault(int(row["chosen_idx"]), []).append(row["r_chosen"])
                r.setdefault(int(row["rejected_idx"]), []).append(row["r_rejected"])
            b, u = int(g["biased_idx"].iloc[0]), int(g["unknown_idx"].iloc[0])
            c = next(i for i in r if i not in (b, u))
            if b in r and c in r:
                d = np.mean(r[b]) - np.mean(r[c])
                wins.append(1.0 if d > 0 else 0.5 if d == 0 else 0.0)
        rate = story["rate"][tag]
        assert rate["n"] == len(wins) and rate["value"] == pytest.approx(np.mean(wins))
        assert rate["lo"] < rate["value"] < rate["hi"]
        cert = story["certificate"][tag]
        assert cert["bound"].startswith("clopper-pearson") and cert["upper"] >= abs(rate["value"] - 0.5) - 1e-9
        assert "templates the model never saw" in cert["estimand"] and cert["clusters"] == rate["clusters"]
        assert cert["certified"] == (cert["upper"] <= story["epsilon"])
        gold = sc["gold"].to_numpy(float)
        right = (sc["r_chosen"] > sc["r_rejected"]).to_numpy(float)
        acc = np.nanmean(np.where(np.isnan(gold), np.nan, np.where(gold == 1, right, 1 - right)))  # gold-less: out
        assert story["accuracy"][tag]["value"] == pytest.approx(acc)
        # template split: the bar's interval is cluster-robust over the same templates as the difference's
        from faro_core.evaluate.paired import cluster_mean_interval

        keep = ~np.isnan(gold)
        ci = cluster_mean_interval(np.where(gold == 1, right, 1 - right)[keep], sc["cluster"].astype(str).to_numpy()[keep])
        assert story["accuracy"][tag]["clusters"] == ci["clusters"] == story["accuracy"]["difference"]["clusters"]
        assert (story["accuracy"][tag]["lo"], story["accuracy"][tag]["hi"]) == pytest.approx((ci["lo"], ci["hi"]))
    d = story["accuracy"]["difference"]["value"]
    assert d == pytest.approx(story["accuracy"]["faro"]["value"] - story["accuracy"]["bt"]["value"])
    # the paired claim: Delta P = P_BT - P_Faro on the same questions, its interval over templates, in words
    p = story["paired"]
    assert p["value"] == pytest.approx(story["rate"]["bt"]["value"] - story["rate"]["faro"]["value"])
    assert p["lo"] <= p["value"] <= p["hi"] and p["unit"] == "template"
    assert "On the same questions" in story["sentence"] and "templates the model never saw" in story["sentence"]
    assert story["split_by"] == "template" and "1 percentage point" in story["rule"]
    assert "does not lower" not in story["sentence"] and f"{100 * story['rate']['bt']['value']:.0f}%" in story["sentence"]
    for ex in story["examples"]:
        roles = [a["role"] for a in ex["answers"]]
        assert roles == ["biased", "counter", "unknown"] and ex["prompt"] and all(a["text"] for a in ex["answers"])
        if ex["kind"] == "bt_stereotyped_faro_correct":
            assert ex["faro_first"] == ex["correct"] != "biased" and ex["bt_first"] == "biased"
        elif ex["kind"] == "bt_leans_faro_not":
            assert ex["faro_first"] == ex["correct"] and ex["bt_margin"] > 0 >= ex["faro_margin"]
        else:
            assert ex["bt_first"] == ex["faro_first"] == "biased" != ex["correct"]
    assert len([e for e in story["examples"] if e["kind"] == "both_stereotyped"]) <= 1


def test_overview_shows_the_story_first_and_the_runs_below(runs_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faro_core.results import story as story_mod
    from faro_core.store.runs import RunStore

    at = _app("app.py").run()
    _ok(at)
    assert at.subheader[0].value.startswith("Does the reward prefer the stereotype")
    assert at.markdown[0].value.startswith("#### Between two people, BT's reward prefers the stereotyped answer")
    svg = [m.value for m in at.markdown if m.value.startswith("<svg class='faro-story'")]
    assert svg and "prefers the stereotyped answer" in svg[0]
    assert at.expander[0].label.startswith("All runs in the store")
    # the story is cached beside the runs: a second load reads it without rebuilding
    monkeypatch.setattr(story_mod, "build_story", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    cached = story_mod.load_story(RunStore(runs_dir))
    assert cached["faro_run"] == "demo-faro-dp-eps0.05-s0"
    assert len(at.table) == len(cached["examples"])  # one table per held-out example (none on a weak store)
    assert [c.value for c in at.caption if c.value.startswith("BT ranks")] == \
        [story_mod.example_caption(e) for e in cached["examples"]]


def test_groups_page_shows_rewards_by_role_and_the_within_item_margin(runs_dir: Path) -> None:
    from faro_core.fairness.role import role_items, role_violations
    from faro_core.results import views as explore
    from faro_core.store.runs import RunStore

    sc = explore.load_scores(RunStore(runs_dir).get("demo-bt-s0"))
    rr = explore.role_rewards(sc)
    assert set(rr["role"]) <= {"biased", "counter", "unknown"}
    centred = rr.groupby("item_id")["reward"].sum()
    assert np.allclose(centred.to_numpy(), 0.0, atol=1e-9)  # within-item deviations
    m = explore.role_margins(sc)
    amb = m[m["context_condition"] == "ambig"]["margin"].to_numpy()
    v = role_violations(role_items(sc))
    assert len(amb) == v["n_dp"]
    assert np.mean(amb > 0) + 0.5 * np.mean(amb == 0) == pytest.approx(v["p_biased_over_counter"])
    at = _app("pages/4_Groups.py").run()
    _ok(at)
    assert at.radio(key="role_cond").options == ["ambiguous", "disambiguated", "all"]
    table = at.dataframe[0].value
    assert "n (questions)" in table.columns and table["n (questions)"].iloc[0] == v["n_dp"]
    assert table["BT"].iloc[0] == pytest.approx(v["p_biased_over_counter"])
    at.radio(key="role_cond").set_value("all").run()
    _ok(at)
