"""Where a sweep's jobs run: ``local`` (a :class:`concurrent.futures.ProcessPoolExecutor` of spawned
processes, one torch thread each; in this process when ``workers`` is 1) or ``ray`` (optional extra
``faro[ray]``; a local Ray instance unless ``RAY_ADDRESS`` is set). Both write to the same run store.

An executor is ``(job, jobs, kw, workers, on_done, failed_row) -> rows``: it calls ``job(spec, **kw)`` for every
job spec -- a config dict, or ``{"batch": [config dicts]}`` for the members of one batch, trained as one job
(one process; one task under Ray) -- and hands each returned row (a batch returns one per member) to
``on_done`` as it arrives. A single job runs in this process (no spawn: a kill of the sweep stops it).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from faro_core.train.ray_launch import _import_ray, check_cluster, ray_resources

Job = Callable[..., dict[str, Any] | list[dict[str, Any]]]
OnDone = Callable[[dict[str, Any]], None] | None
FailedRow = Callable[[dict[str, Any], BaseException], dict[str, Any]] | None  # the row of a job whose worker died


def _rows(out: dict[str, Any] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return out if isinstance(out, list) else [out]


def run_local(run_job: Job, jobs: list[dict[str, Any]], kw: dict[str, Any], workers: int, on_done: OnDone,
              failed_row: FailedRow = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if workers <= 1 or len(jobs) == 1:
        for j in jobs:
            for row in _rows(run_job(j, **kw)):
                rows.append(row)
                if on_done:
                    on_done(row)
        return rows
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(run_job, j, **kw) for j in jobs]
        for f in as_completed(futs):
            for row in _rows(f.result()):
                rows.append(row)
                if on_done:
                    on_done(row)
    return rows


def run_ray(run_job: Job, jobs: list[dict[str, Any]], kw: dict[str, Any], workers: int, on_done: OnDone,
            failed_row: FailedRow = None) -> list[dict[str, Any]]:
    """Each job a Ray task asking for :func:`faro_core.train.ray_launch.ray_resources` (one CPU; one GPU in full
    mode). A task whose worker dies leaves its run interrupted (resumable: run the sweep again) and the
    others go on; its row is ``failed_row(job, exc)`` (default: re-raise)."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=workers if not os.environ.get("RAY_ADDRESS") else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        started = True
    try:
        total = ray.cluster_resources()
        refs = {}
        for j in jobs:
            res = ray_resources((j["batch"][0] if "batch" in j else j).get("mode") or "head")
            check_cluster(res, total, f"the Ray cluster at {os.environ.get('RAY_ADDRESS') or 'this machine'}")
            refs[ray.remote(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], max_retries=0)(run_job).remote(
                j, **kw)] = j
        pending = list(refs)
        rows = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                new = _rows(ray.get(done[0]))
            except Exception as exc:  # the worker died: report its runs, keep the others
                if failed_row is None:
                    raise
                job = refs[done[0]]
                new = [failed_row(m, exc) for m in job.get("batch", [job])]
            for row in new:
                rows.append(row)
                if on_done:
                    on_done(row)
        return rows
    finally:
        if started:
            ray.shutdown()


EXECUTORS = {"local": run_local, "ray": run_ray}
