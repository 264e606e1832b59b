"""Runs on a Ray cluster: the resources a run asks for, the cluster check, and the driver of one launch.

Where a run goes (:data:`TARGETS`): ``local-cpu`` (a background process on this machine), ``local-gpu`` (the
same, full mode: the backbone is fine-tuned on this machine's CUDA device under bf16 autocast), or ``ray``
(the cluster at ``RAY_ADDRESS``). Sweeps (``faro sweep --executor ray``) and dashboard launches ask Ray for the
same resources (:func:`ray_resources`): one CPU, and one GPU for every full-mode run.

A dashboard launch onto Ray is a small local *driver* process (``python -m faro_core.train.ray_launch``) that
checks the cluster can ever hold the run (:func:`check_cluster`; a missing GPU fails at once with a clear
error instead of waiting forever), submits one task that runs ``faro train`` in a Ray worker, and waits. The
driver is what the launcher's queue tracks and cancels: on SIGTERM it force-cancels the task (the worker is
killed; the run reads ``interrupted`` and ``faro train --resume`` continues it from its checkpoint). Ray also
ends a job's tasks when its driver dies. The worker records where it ran in ``placement.json`` (host, node,
GPU ids) in the run directory.

The run store must be a path every node sees (a shared file system): workers write the run's files there
directly, as a local run does.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import sys
from typing import Any

from faro_core.errors import FaroError
from faro_core.io import write_json

TARGETS = ("local-cpu", "local-gpu", "ray")
PLACEMENT_FILE = "placement.json"


def ray_resources(mode: str, num_gpus: float | None = None) -> dict[str, float]:
    """What one run asks Ray for: ``num_cpus=1``, and ``num_gpus=1`` in full mode (head mode: 0), unless
    ``num_gpus`` says otherwise."""
    gpus = (1.0 if mode == "full" else 0.0) if num_gpus is None else float(num_gpus)
    if gpus < 0:
        raise FaroError(f"num_gpus must be >= 0, got {num_gpus}")
    return {"num_cpus": 1.0, "num_gpus": gpus}


def check_cluster(resources: dict[str, float], total: dict[str, float], address: str = "the Ray cluster") -> None:
    """:class:`FaroError` when the cluster's total resources (``ray.cluster_resources()``) can never hold
    one run's ``resources`` (Ray would queue such a task forever)."""
    need_gpu, have_gpu = resources.get("num_gpus", 0.0), float(total.get("GPU", 0.0))
    if need_gpu > have_gpu:
        raise FaroError(f"this run needs {need_gpu:g} GPU(s) but {address} has {have_gpu:g}: start the cluster "
                        "with GPU nodes (ray start --num-gpus=N), or run in head mode on CPUs")
    need_cpu, have_cpu = resources.get("num_cpus", 0.0), float(total.get("CPU", 0.0))
    if need_cpu > have_cpu:
        raise FaroError(f"this run needs {need_cpu:g} CPU(s) but {address} has {have_cpu:g}")


def cluster_summary(address: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """``{"address", "nodes", "CPU", "GPU", "memory_gb"}`` of the cluster at ``address`` (default
    ``RAY_ADDRESS``); :class:`FaroError` when Ray is missing or the cluster cannot be reached."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise FaroError("no Ray cluster: set RAY_ADDRESS (e.g. 127.0.0.1:6379) to the head node's address")
    ray = _import_ray()
    started = not ray.is_initialized()
    try:
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        total = ray.cluster_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
    except Exception as exc:  # connection refused, version mismatch, ...
        raise FaroError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    return {"address": address, "nodes": len(nodes), "CPU": float(total.get("CPU", 0.0)),
            "GPU": float(total.get("GPU", 0.0)), "memory_gb": round(float(total.get("memory", 0.0)) / 2**30, 1)}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise FaroError("Ray is not installed: pip install 'faro[ray]' (or pip install ray)") from exc
    return ray


def _train_in_worker(train_args: list[str], runs_dir: str, run_id: str) -> dict[str, Any]:
    """The Ray task: record where it runs, then ``faro train`` in this worker process; returns its exit code."""
    import ray

    ctx = ray.get_runtime_context()
    placement = {"host": socket.gethostname(), "pid": os.getpid(), "node_id": ctx.get_node_id(),
                 "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                 "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    path = os.path.join(runs_dir, run_id)
    os.makedirs(path, exist_ok=True)
    write_json(os.path.join(path, PLACEMENT_FILE), placement)
    # The worker runs the ``faro`` program itself, in this process (so that cancelling the task stops the
    # training), by module name as the launcher's command line does: the training layer does not import the
    # CLI above it (docs/ARCHITECTURE.md).
    sys.argv = ["faro", *train_args]
    try:
        runpy.run_module("faro_core", run_name="__main__", alter_sys=True)
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return {**placement, "rc": int(rc)}


def drive(train_args: list[str], runs_dir: str, run_id: str, mode: str, num_gpus: float | None = None,
          address: str | None = None) -> int:
    """Submit one run to the cluster and wait for it (the driver process). Exit code: the run's, or 2 with a
    one-line error when the cluster cannot hold it or cannot be reached."""
    ray = _import_ray()
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise FaroError("target 'ray' needs RAY_ADDRESS (the head node's address, e.g. 127.0.0.1:6379)")
    res = ray_resources(mode, num_gpus)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True, ignore_reinit_error=True)
    except Exception as exc:
        raise FaroError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    check_cluster(res, ray.cluster_resources(), f"the Ray cluster at {address}")
    task = ray.remote(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], max_retries=0)(_train_in_worker)
    ref = task.remote(train_args, runs_dir, run_id)

    def _stop(signum: int, frame: Any) -> None:  # the launcher's cancel: kill the worker, then leave
        try:
            ray.cancel(ref, force=True)
        finally:
            os._exit(143)

    signal.signal(signal.SIGTERM, _stop)
    try:
        out = ray.get(ref)
    except Exception as exc:  # the worker died (killed, out of memory): the run reads interrupted
        print(f"faro: error: the Ray task of run {run_id} ended without a result: {type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''} — resume it with "
              f"`faro train --resume {run_id} --runs-dir {runs_dir}`", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return int(out.get("rc", 1))


def main(argv: list[str] | None = None) -> int:
    """``python -m faro_core.train.ray_launch RUNS_DIR RUN_ID MODE NUM_GPUS -- <faro train arguments>``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        sep = argv.index("--")
        runs_dir, run_id, mode, gpus = argv[:sep]
        return drive(argv[sep + 1:], runs_dir, run_id, mode, None if gpus == "auto" else float(gpus))
    except FaroError as exc:
        print(f"faro: error: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print("usage: python -m faro_core.train.ray_launch RUNS_DIR RUN_ID MODE NUM_GPUS -- ARGS", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
