"""The batched engine (issue #17): a member of a batch is its solo run, cancel and resume per member."""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from faro_core.models.threads import THREADS_ENV
from faro_core.store.runs import RunStore
from faro_core.train import FaroConfig, train
from faro_core.train.batched import DEFAULT_MEMORY_MB, batchable, member_bytes, plan_batches, train_batch

# a few epochs on the demo, dual steps every 2 steps so the multipliers move, validation every 4 steps so
# the selection has candidates to choose from, checkpoints every 6; the mini demo, as every trainer-mechanics test
BASE = dict(data="demo-mini", epochs=6, batch_size=64, dual_every=2, eval_every=4, ckpt_every=6, min_count=10,
            strata=["question_polarity"])
MEMBERS = {
    "bt": FaroConfig(method="bt", seed=1, **BASE),
    "dp": FaroConfig(constraints=["dp"], epsilon=0.02, seed=0, **BASE),
    "eo": FaroConfig(constraints=["eo"], epsilon=0.02, seed=2, **BASE),
    "cf": FaroConfig(constraints=["cf"], epsilon=0.02, seed=0, **BASE),
}


def _scores(run) -> pd.DataFrame:
    return pd.read_parquet(run.file("scores.parquet"))


def _max_dr(a, b) -> float:
    sa, sb = _scores(a), _scores(b)
    assert list(sa["pair_id"]) == list(sb["pair_id"])
    out = 0.0
    for col in ("r_chosen", "r_rejected", "cf_r_chosen", "cf_r_rejected"):
        x, y = sa[col].to_numpy(), sb[col].to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y)), col
        ok = ~np.isnan(x)
        out = max(out, float(np.abs(x[ok] - y[ok]).max()) if ok.any() else 0.0)
    return out


@contextlib.contextmanager
def two_threads():
    """The engine's slots stepped by two threads, whatever this machine's cores (the threaded path)."""
    before = os.environ.get(THREADS_ENV)
    os.environ[THREADS_ENV] = "2"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(THREADS_ENV)
        else:
            os.environ[THREADS_ENV] = before


@pytest.fixture(scope="module")
def solo_and_batch(tmp_path_factory) -> tuple[RunStore, RunStore]:
    from faro_core.train import batched

    solo, batch = RunStore(tmp_path_factory.mktemp("solo")), RunStore(tmp_path_factory.mktemp("batch"))
    for name, cfg in MEMBERS.items():
        train(cfg, solo, run_id=name, progress=False)
    with two_threads():
        train_batch(list(MEMBERS.values()), batch, list(MEMBERS), progress=False)
    assert batched.LAST_BATCH["threads"] == 2
    return solo, batch


@pytest.mark.parametrize("name", list(MEMBERS))
def test_member_equals_its_solo_run(solo_and_batch, name: str) -> None:
    """Same rewards on every scored pair (max |dr| <= 1e-5; measured 0), same selected iterate, same weights,
    metrics and history (times aside), for BT and one constrained member of each kind, with different seeds
    (so different batch orders and initializations) in one batch."""
    solo, batch = (s.get(name) for s in solo_and_batch)
    assert batch.status == "done"
    assert _max_dr(solo, batch) <= 1e-5
    pd.testing.assert_frame_equal(_scores(solo), _scores(batch))  # the batch writes its frames' tables once
    ms, mb = solo.metrics(), batch.metrics()
    assert mb["selected_step"] == ms["selected_step"] and mb["selected_by"] == ms["selected_by"]
    assert mb == ms
    ws, wb = load_file(str(solo.file("model.safetensors"))), load_file(str(batch.file("model.safetensors")))
    assert ws.keys() == wb.keys() and all(torch.equal(ws[k], wb[k]) for k in ws)
    strip = [{k: v for k, v in h.items() if k != "time"} for h in solo.history()]
    assert strip == [{k: v for k, v in h.items() if k != "time"} for h in batch.history()]
    if name != "bt":  # the multipliers moved: the equality covers the dual steps
        assert max(h["lambda_max"] for h in batch.history()) > 0
    for f in ("config.json", "constraints.json", "model.json"):
        assert solo.read(f) == batch.read(f)
    timing = ("feature_seconds", "encoded")  # the feature pass's cost, which the first run paid
    assert {k: v for k, v in solo.read("data.json").items() if k not in timing} == \
        {k: v for k, v in batch.read("data.json").items() if k not in timing}


def test_batch_members_are_ordinary_runs(solo_and_batch) -> None:
    solo, batch = solo_and_batch
    for name in MEMBERS:
        a, b = solo.get(name), batch.get(name)
        assert sorted(p.name for p in a.path.iterdir()) == sorted(p.name for p in b.path.iterdir())
        assert b.raw_status()["batch"] == list(MEMBERS)


def test_cancel_one_member_the_others_go_on(tmp_path) -> None:
    """A cancel request stops that member at once (no step after it is seen) and marks it interrupted with
    its last checkpoint; the other members finish and equal their solo runs."""
    store = RunStore(tmp_path / "runs")
    seen: list[int] = []

    def cancel_dp_after_its_checkpoint(run_id: str, row: dict) -> None:
        if run_id == "dp":
            seen.append(row["step"])
            if row["step"] == 8:  # rows arrive in groups, after the step-6 checkpoint
                store.get("dp").request_cancel()

    train_batch([MEMBERS["dp"], MEMBERS["bt"]], store, ["dp", "bt"], progress=False,
                on_step=cancel_dp_after_its_checkpoint, cancel_poll_s=0.0)
    dp, bt = store.get("dp"), store.get("bt")
    assert dp.status == "interrupted" and "cancelled" in dp.raw_status()["error"]
    assert not dp.cancel_requested()
    assert bt.status == "done"
    solo = RunStore(tmp_path / "solo")
    ref = train(MEMBERS["bt"], solo, run_id="bt", progress=False)
    assert _max_dr(ref, bt) == 0.0
    assert max(seen) < 12 and dp.read("checkpoint/state.json")["step"] == 6  # stopped right after the request
    # the cancelled member resumes (solo) to the result of an uninterrupted run
    assert dp.progress()["step"] < dp.progress()["total_steps"]
    done = train(None, store, run_id="dp", resume=True, progress=False)
    ref_dp = train(MEMBERS["dp"], solo, run_id="dp", progress=False)
    assert done.metrics() == ref_dp.metrics() and _max_dr(done, ref_dp) == 0.0


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_member_whose_final_pass_fails_fails_alone(tmp_path, monkeypatch, threads) -> None:
    """The final pass (scoring, metrics, files) of one member raising marks that member failed with the error;
    the others' files are written and they are done, whether the pass runs on one thread or in the pool."""
    from faro_core.train import batched

    real = batched.write_final

    def broken(config, run, out, memo=None):
        if run.run_id == "eo":
            raise OSError("disk full (planted)")
        return real(config, run, out, memo)

    monkeypatch.setattr(batched, "write_final", broken)
    monkeypatch.setenv(THREADS_ENV, threads)
    store = RunStore(tmp_path / "runs")
    train_batch([MEMBERS["bt"], MEMBERS["eo"], MEMBERS["cf"]], store, ["bt", "eo", "cf"], progress=False)
    eo = store.get("eo")
    assert eo.status == "failed" and "disk full (planted)" in eo.raw_status()["error"]
    for name in ("bt", "cf"):
        run = store.get(name)
        assert run.status == "done" and run.file("metrics.json").exists() and run.file("scores.parquet").exists()


def test_batchable_and_memory_plan() -> None:
    assert batchable(MEMBERS["dp"]) and batchable(MEMBERS["bt"])
    assert not batchable(FaroConfig(method="expgrad", constraints=["eo"]))
    assert not batchable(FaroConfig(mode="full"))
    assert not batchable(FaroConfig(constraints=["dp"], average=0.99))
    cfgs = [FaroConfig(constraints=[k], epsilon=e) for k in ("dp", "eo") for e in (0.1, 0.05)]
    cfgs += [FaroConfig(constraints=["dp"], epsilon=0.1, lr=1e-3), FaroConfig(method="expgrad", constraints=["dp"])]
    batches, serial = plan_batches(cfgs)
    assert [len(b) for b in batches] == [4, 1] and len(serial) == 1  # another lr is another batch
    one = member_bytes(2400, 384, 256, 512)
    assert 1e6 < one < 2e7
    small, _ = plan_batches(cfgs[:4], memory_mb=2.5 * one / 2**20, n_pairs=2400)
    assert [len(b) for b in small] == [2, 2]
    assert math.floor(DEFAULT_MEMORY_MB * 2**20 / one) >= 100  # the default budget holds a 100-member grid


SWEEP = ["--data", "demo-mini", "--constraints", "dp,cf", "--epsilons", "0.02", "--baselines", "bt", "--seeds", "0", "--min-count", "10",
         "--strata", "question_polarity", "--dual-every", "2", "--ckpt-every", "10", "--n-boot", "5", "--quiet",
         "--json"]


def test_batched_sweep_equals_serial_sweep(tmp_path) -> None:
    """`faro sweep --engine batched` (the default) and `--engine serial` write the same runs: same ids, same
    metrics, same rewards (the table's timings aside)."""
    from faro_core.cli import main as faro_main

    for engine in ("batched", "serial"):
        assert faro_main(["sweep", *SWEEP, "--epochs", "4", "--engine", engine, "--runs-dir",
                          str(tmp_path / engine)]) == 0
    a, b = RunStore(tmp_path / "batched"), RunStore(tmp_path / "serial")
    ids = sorted(r.run_id for r in a.list())
    assert len(ids) == 3 and ids == sorted(r.run_id for r in b.list())
    for rid in ids:
        assert a.get(rid).metrics() == b.get(rid).metrics() and _max_dr(a.get(rid), b.get(rid)) == 0.0
        assert a.get(rid).raw_status().get("batch") and not b.get(rid).raw_status().get("batch")
        ev_a, ev_b = ({k: v for k, v in s.get(rid).read("eval.json").items() if k != "seconds"} for s in (a, b))
        assert ev_a == ev_b


def test_kill_9_mid_batch_then_the_sweep_resumes_every_member(tmp_path) -> None:
    """kill -9 of a batched sweep mid-training leaves every member interrupted with its own checkpoint (the
    other runs of the store untouched); running the sweep again resumes them to the uninterrupted result."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from faro_core.cli import main as faro_main

    root = Path(__file__).resolve().parent.parent
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    args = [*SWEEP, "--epochs", "25"]
    assert faro_main(["sweep", *args, "--engine", "serial", "--runs-dir", str(ref_dir)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "faro_core", "sweep", *args, "--runs-dir", str(dir_)], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = RunStore(dir_)
    ids = [r.run_id for r in RunStore(ref_dir).list()]
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # wait for the second checkpoint of every member, then kill
            if all(store.has(i) and (store.path(i) / "checkpoint" / "state.json").exists() and
                   store.get(i).read("checkpoint/state.json")["step"] >= 20 for i in ids):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    total = RunStore(ref_dir).get(ids[0]).metrics()["steps"]
    for i in ids:
        run = store.get(i)
        assert run.status == "interrupted" and 0 < run.progress()["step"] < total, (i, run.status)
    assert faro_main(["sweep", *args, "--runs-dir", str(dir_)]) == 0
    for i in ids:
        ref, done = RunStore(ref_dir).get(i), store.get(i)
        assert done.status == "done" and done.metrics() == ref.metrics() and _max_dr(done, ref) == 0.0
        assert [h["step"] for h in done.history()] == list(range(1, total + 1))


def test_launched_grid_is_one_batch_cancel_one_member(tmp_path) -> None:
    """The dashboard's grid launch: one background `faro sweep` process trains every member (the queue lists
    each with its own progress); cancelling one member stops it (interrupted, checkpoint kept) while the
    others finish; the cancelled member then resumes to its uninterrupted result."""
    import time

    from faro_core.cli import main as faro_main
    from faro_core.studies.grid import SweepSpec
    from faro_core.studies.sweep import launch_spec
    from faro_core.train import launch

    store = RunStore(tmp_path / "runs")
    spec = SweepSpec(base=FaroConfig(epochs=80, data="demo-mini", strata=["question_polarity"]), kinds=["dp", "cf"],
                     epsilons=[0.05], seeds=[0], baselines=["bt"], name="ui")
    ids = launch_spec(store, spec)
    assert len(ids) == 3
    pids = {launch.launch_info(store, r)["pid"] for r in ids}
    assert len(pids) == 1, "one process for the batch"
    victim = ids[0]
    state = store.path(victim) / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and not state.exists():
        time.sleep(0.05)
    assert state.exists(), launch.log_tail(store, victim)
    assert launch.cancel(store, victim) == "interrupted"
    rows = {r["run_id"]: r for r in launch.queue(store)}
    assert set(rows) == set(ids) and rows[victim]["status"] == "interrupted"
    assert all(rows[r]["alive"] for r in ids[1:]), "the batch stopped with the cancelled member"
    for rid in ids[1:]:
        assert launch.wait(store, rid, timeout_s=600) == "done", launch.log_tail(store, rid)
    run = store.get(victim)
    assert run.status == "interrupted" and 0 < run.progress()["step"] < run.progress()["total_steps"]
    assert faro_main(["train", "--resume", victim, "--runs-dir", str(store.root), "--quiet"]) == 0
    total = run.progress()["total_steps"]
    assert run.status == "done" and [h["step"] for h in run.history()] == list(range(1, total + 1))


def test_train_page_grid_launch_is_one_batch(tmp_path, monkeypatch) -> None:
    """The Train page launches a grid (here BT and DP at one ε) as one batched process; both runs finish."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from faro_core.train import launch

    monkeypatch.setenv("FARO_RUNS_DIR", str(tmp_path / "runs"))
    page = Path(__file__).resolve().parent.parent / "dashboard" / "pages" / "2_Train.py"
    at = AppTest.from_file(str(page), default_timeout=60)
    at.session_state["data_choice"] = {"data": "demo-mini"}  # as the Data page sets it
    at.run()
    at.multiselect(key="w-kinds").set_value(["dp"])
    at.multiselect(key="w-baselines").set_value(["bt"])
    at.text_input(key="w-epsilons").set_value("0.05")
    at.number_input(key="w-epochs").set_value(1)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    assert at.success and "one batch" in at.success[0].value
    store = RunStore(tmp_path / "runs")
    rows = launch.queue(store)
    assert len(rows) == 2 and len({r["pid"] for r in rows}) == 1
    for r in rows:
        assert launch.wait(store, r["run_id"], timeout_s=300) == "done", launch.log_tail(store, r["run_id"])
    methods = sorted(store.get(r["run_id"]).config["method"] for r in rows)
    assert methods == ["bt", "faro"] and all(store.get(r["run_id"]).config["epochs"] == 1 for r in rows)
    assert all(store.get(r["run_id"]).config["data"] == "demo-mini" for r in rows)


def test_pareto_page_says_it_follows_training_runs(tmp_path, monkeypatch) -> None:
    """While a run trains (e.g. a member of a launched grid) the Pareto page says it updates as runs finish
    (it reruns when one does); with none training it says nothing of the kind."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FARO_RUNS_DIR", str(tmp_path / "runs"))
    store = RunStore(tmp_path / "runs")
    run = store.create(MEMBERS["dp"].resolved().to_dict(), run_id="member")
    run.set_status("running")  # this process, a fresh heartbeat: it reads as running
    page = Path(__file__).resolve().parent.parent / "dashboard" / "pages" / "3_Pareto.py"
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("training: the front updates" in c.value for c in at.caption)
    run.set_status("interrupted")
    at = AppTest.from_file(str(page), default_timeout=60).run()
    assert not any("training: the front updates" in c.value for c in at.caption)


# members that share their path: one seed, one kind, epsilons either side of where the multipliers rise, on
# the role attribute (its item batches included); the loose members never leave lambda = 0
SHARED = {f"{k}-{e:g}": FaroConfig(constraints=[k], epsilon=e, seed=0, attribute="role", **BASE)
          for k in ("dp", "eo", "cf") for e in (0.02, 0.9)}


def test_shared_members_equal_their_solo_runs(tmp_path) -> None:
    """Members whose seed, data and settings match (epsilon aside) train as one slot while all their
    multipliers are 0 and fork when one rises; each still equals its solo run bit for bit: rewards, weights,
    selected step, metrics, history (times aside)."""
    from faro_core.train import batched

    solo, batch = RunStore(tmp_path / "solo"), RunStore(tmp_path / "batch")
    with two_threads():
        train_batch(list(SHARED.values()), batch, list(SHARED), progress=False)
    stats = dict(batched.LAST_BATCH)
    assert stats["start_slots"] == 2 and stats["slot_steps"] < stats["member_steps"]
    rose = []
    for name, cfg in SHARED.items():
        a, b = train(cfg, solo, run_id=name, progress=False), batch.get(name)
        assert b.status == "done" and _max_dr(a, b) == 0.0
        assert a.metrics() == b.metrics()
        wa, wb = load_file(str(a.file("model.safetensors"))), load_file(str(b.file("model.safetensors")))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
        strip = [{k: v for k, v in h.items() if k != "time"} for h in a.history()]
        assert strip == [{k: v for k, v in h.items() if k != "time"} for h in b.history()]
        rose.append(max(h["lambda_max"] for h in b.history()) > 0)
    assert any(rose) and not all(rose), "some members fork, some stay on the shared path"


def test_one_sync_defers_each_files_fsync_to_one_sync(tmp_path, monkeypatch) -> None:
    """Inside ``one_sync`` (what the engine wraps its members' files and checkpoints in) atomic writes skip
    their own fsync and one sync of the file system follows; outside, every write is fsynced; heartbeats and
    progress are written without one."""
    from faro_core import io

    calls = {"fsync": 0, "syncfs": 0}
    real_fsync = os.fsync
    monkeypatch.setattr(io.os, "fsync", lambda fd: (calls.__setitem__("fsync", calls["fsync"] + 1), real_fsync(fd)))
    monkeypatch.setattr(io, "_syncfs", lambda path: calls.__setitem__("syncfs", calls["syncfs"] + 1))
    io.write_json(tmp_path / "a.json", {"a": 1})
    assert calls == {"fsync": 1, "syncfs": 0}
    with io.one_sync(tmp_path):
        with io.one_sync(tmp_path):  # nested: one sync at the outermost end
            for i in range(5):
                io.write_json(tmp_path / f"b{i}.json", {"i": i})
        assert calls == {"fsync": 1, "syncfs": 0}
    assert calls == {"fsync": 1, "syncfs": 1}
    assert io.read_json(tmp_path / "b4.json") == {"i": 4} and not list(tmp_path.glob(".*.tmp"))
    # a worker thread's writes inside joined_sync (the engine finishing its members in its threads, inside
    # the caller's one_sync) skip their fsync and leave the sync to the caller's block
    with io.joined_sync():
        io.write_json(tmp_path / "c.json", {"c": 1})
    assert calls == {"fsync": 1, "syncfs": 1} and io.read_json(tmp_path / "c.json") == {"c": 1}
    run = RunStore(tmp_path / "runs").create({"name": "x"}, run_id="x")
    run.set_status("running")
    before = dict(calls)
    run.heartbeat()
    run.set_progress(3, 10)
    assert calls == before and run.progress()["step"] == 3
