"""Runs on a Ray cluster from the launcher (the dashboard's Train page) and the sweep executor.

A local Ray head on 127.0.0.1 declares one GPU (this machine has none: Ray only schedules by the resource
count), so the tests show that a run asking for a GPU is scheduled onto it, that its store writes land,
that cancel works, that a run whose resource the cluster lacks fails at once with a clear error, and that
a Ray worker killed mid-run leaves its run interrupted and resumable while the other run finishes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from faro_core.errors import FaroError
from faro_core.train.ray_launch import check_cluster, ray_resources

ROOT = Path(__file__).resolve().parent.parent


def test_full_mode_runs_ask_for_one_gpu() -> None:
    assert ray_resources("full") == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert ray_resources("head") == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert ray_resources("head", num_gpus=1) == {"num_cpus": 1.0, "num_gpus": 1.0}
    check_cluster(ray_resources("full"), {"CPU": 4.0, "GPU": 1.0})
    with pytest.raises(FaroError, match="needs 1 GPU.*has 0"):
        check_cluster(ray_resources("full"), {"CPU": 4.0})


def test_sweep_executor_asks_ray_for_a_gpu_in_full_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep's Ray executor requests num_gpus=1 for full-mode jobs (recorded without running them)."""
    ray = pytest.importorskip("ray")
    from faro_core.studies import executors, sweep

    asked: list[dict] = []

    class FakeRemote:
        def __init__(self, **kw):  # noqa: ANN003
            asked.append(kw)

        def __call__(self, fn):  # noqa: ANN001, ANN204
            return self

        def remote(self, *a, **k):  # noqa: ANN002, ANN003, ANN201
            return object()

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    monkeypatch.setattr(ray, "remote", lambda **kw: FakeRemote(**kw))
    monkeypatch.setattr(ray, "wait", lambda pending, num_returns: ([pending[0]], pending[1:]))
    monkeypatch.setattr(ray, "get", lambda ref: {"run_id": "x"})
    executors.run_ray(sweep.run_job, [{"mode": "full"}, {"mode": "head"}], {"runs_dir": "/tmp"}, 1, None)
    assert [(a["num_gpus"], a["num_cpus"]) for a in asked] == [(1.0, 1.0), (0.0, 1.0)]
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(FaroError, match="needs 1 GPU"):
        executors.run_ray(sweep.run_job, [{"mode": "full"}], {"runs_dir": "/tmp"}, 1, None)


@pytest.fixture(scope="module")
def ray_head():  # noqa: ANN201
    """A local Ray head on 127.0.0.1 with 2 CPUs and one declared GPU; RAY_ADDRESS points at it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'faro[ray]')")
    old = {k: os.environ.get(k) for k in ("RAY_ADDRESS", "PYTHONPATH")}
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([old["PYTHONPATH"]] if old["PYTHONPATH"] else []))
    os.environ.pop("RAY_ADDRESS", None)
    ctx = ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1",
                   object_store_memory=80 * 2**20, log_to_driver=False)
    os.environ["RAY_ADDRESS"] = ctx.address_info["gcs_address"]
    try:
        yield os.environ["RAY_ADDRESS"]
    finally:
        ray.shutdown()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait_for(cond, timeout_s: float = 120.0) -> bool:  # noqa: ANN001
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_compute_shows_the_cluster(ray_head: str) -> None:
    from faro_core.train.launch import compute_resources

    res = compute_resources()
    assert res["cpu_cores"] >= 1 and isinstance(res["cuda"], list)
    assert res["ray"] == {**res["ray"], "address": ray_head, "GPU": 1.0, "CPU": 2.0, "nodes": 1}


def test_a_gpu_run_is_scheduled_on_the_cluster_and_writes_the_store(ray_head: str, tmp_path: Path) -> None:
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    store = RunStore(tmp_path / "store")
    rid = launch.launch_train(store, target="ray", num_gpus=1, constraint="dp", epsilon=0.1, epochs=1, data="demo-mini")
    assert launch.wait(store, rid, timeout_s=240) == "done", launch.log_tail(store, rid, 20)
    run = store.get(rid)
    placement = json.loads(run.file("placement.json").read_text())
    assert placement["gpu_ids"] == ["0"], placement  # Ray gave the task the declared GPU
    assert run.file("metrics.json").exists() and run.file("scores.parquet").exists()
    assert launch.queue(store)[0]["target"] == "ray"


def test_a_run_whose_resource_is_missing_fails_with_a_clear_error(ray_head: str, tmp_path: Path) -> None:
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    store = RunStore(tmp_path / "store")
    rid = launch.launch_train(store, target="ray", num_gpus=2, epochs=1, data="demo-mini")
    assert launch.wait(store, rid, timeout_s=120) == "failed"
    row = launch.queue(store)[0]
    assert "needs 2 GPU(s)" in row["error"] and "has 1" in row["error"], row["error"]


def test_cancel_and_a_killed_worker_leave_the_run_interrupted_and_resumable(ray_head: str, tmp_path: Path) -> None:
    """Three runs on the cluster: one cancelled from the queue, one whose Ray worker is killed (kill -9)
    after its first checkpoint, one left alone. The first two read interrupted with their checkpoints, the
    third finishes, and `faro train --resume` finishes the killed one."""
    from faro_core.cli import main as faro_main
    from faro_core.store.runs import RunStore
    from faro_core.train import launch

    store = RunStore(tmp_path / "store")
    ids = [launch.launch_train(store, target="ray", constraint="dp", epsilon=0.05, epochs=e, seed=i, data="demo-mini")
           for i, e in enumerate((400, 400))]
    ckpt = [store.path(r) / "checkpoint" / "state.json" for r in ids]
    assert _wait_for(lambda: all(c.exists() for c in ckpt), 240), [launch.log_tail(store, r, 20) for r in ids]
    # cancel the first from the launcher (what the Train page's button calls)
    assert launch.cancel(store, ids[0]) == "interrupted"
    # kill the second one's Ray worker
    worker = json.loads(store.get(ids[1]).file("placement.json").read_text())["pid"]
    os.kill(worker, signal.SIGKILL)
    assert _wait_for(lambda: store.get(ids[1]).status == "interrupted", 60)
    assert launch.wait(store, ids[1], timeout_s=60) == "interrupted"
    assert "resume it with" in launch.log_tail(store, ids[1], 5)
    # a third run still gets scheduled and finishes
    other = launch.launch_train(store, target="ray", epochs=1, seed=3, data="demo-mini")
    assert launch.wait(store, other, timeout_s=240) == "done", launch.log_tail(store, other, 20)
    for r in ids:
        assert store.get(r).status == "interrupted" and (store.path(r) / "checkpoint").exists()
    run = store.get(ids[1])
    assert faro_main(["train", "--resume", ids[1], "--runs-dir", str(store.root), "--quiet"]) == 0
    assert run.status == "done"
    assert [h["step"] for h in run.history()] == list(range(1, run.progress()["total_steps"] + 1))
