"""Concurrent runs into one store (issue #8, part 3).

Four runs start at once: two ``faro train`` subprocesses (the CLI) and two through the dashboard's launcher
(:mod:`faro_core.train.launch`). All finish, and the run index (:meth:`RunStore.index`) is consistent: four
entries, all ``done``, each with metrics, a parseable run directory, and the launcher's queue agrees.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from faro_core.store.runs import RunStore
from faro_core.train import launch

ROOT = Path(__file__).resolve().parent.parent
# All four overlap (asserted below). With 1 epoch they did not: the two launcher runs, each in a new session
# and so a CPU share of its own under Linux autogroup scheduling, finished before the two CLI runs, which
# shared the test's session, had started; the store was written in turn (measured start/finish times). Now
# the CLI runs get sessions of their own too, as from a user's terminal, and 60 epochs (~3 s of training
# each on the demo) leave room for start-up skew.
ARGS = ["--epochs", "60", "--batch-size", "64", "--quiet", "--json"]


def test_four_concurrent_runs_cli_and_launcher(tmp_path: Path) -> None:
    from test_crash import assert_run_dir_parses, warm_feature_cache

    warm_feature_cache()  # four cold encoders at once would only measure the encoder
    store = RunStore(tmp_path / "runs")
    cli = [subprocess.Popen([sys.executable, "-m", "faro_core", "train", "--data", "demo-mini", "--constraint", c, "--runs-dir",
                             str(store.root), "--run-id", f"cli-{c}", *ARGS], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
           for c in ("dp", "eo")]
    launched = [launch.launch_train(store, run_id=f"ui-{c}", constraint=c, epsilon=0.05, epochs=60, data="demo-mini",
                                    extra=["--batch-size", "64"]) for c in ("cf", "dp")]
    t0 = time.time()
    for p in cli:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    for rid in launched:
        assert launch.wait(store, rid, timeout_s=300 - (time.time() - t0)) == "done", launch.log_tail(store, rid)

    index = store.index()
    assert sorted(r["run_id"] for r in index) == ["cli-dp", "cli-eo", "ui-cf", "ui-dp"]
    assert all(r["status"] == "done" for r in index), [(r["run_id"], r["status"]) for r in index]
    for r in index:
        m = r["metrics"]
        assert {"accuracy", "violation", "test"} <= set(m) and r["progress"] == 1.0, r["run_id"]
        assert_run_dir_parses(store.get(r["run_id"]).path)
    by_id = {r["run_id"]: r for r in index}
    assert by_id["ui-cf"]["constraints"] == ["cf"] and by_id["cli-eo"]["constraints"] == ["eo"]
    # the runs really ran at once: some moment lies inside all four (a store written in turn tests nothing)
    spans = [(st["started"], st["finished"]) for st in (store.get(r["run_id"]).raw_status() for r in index)]
    assert max(a for a, _ in spans) < min(b for _, b in spans), f"the runs did not overlap: {spans}"
    queue = {q["run_id"]: q for q in launch.queue(store)}
    assert set(queue) == {"ui-cf", "ui-dp"} and all(q["status"] == "done" and not q["alive"] for q in queue.values())
