"""Where a sweep's jobs run: ``local`` (a :class:`concurrent.futures.ProcessPoolExecutor` of spawned
processes, one torch thread each; in this process when ``workers`` is 1) or ``ray`` (optional extra
``faro[ray]``; a local Ray instance unless ``RAY_ADDRESS`` is set). Both write to the same run store.

An executor is ``(job, jobs, kw, workers, on_done) -> rows``: it calls ``job(config_dict, **kw)`` for every
config dict and hands each returned row to ``on_done`` as it arrives.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from faro_core.errors import FaroError

Job = Callable[..., dict[str, Any]]
OnDone = Callable[[dict[str, Any]], None] | None


def run_local(run_job: Job, jobs: list[dict[str, Any]], kw: dict[str, Any], workers: int,
               on_done: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if workers <= 1:
        for j in jobs:
            rows.append(run_job(j, **kw))
            if on_done:
                on_done(rows[-1])
        return rows
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(run_job, j, **kw) for j in jobs]
        for f in as_completed(futs):
            rows.append(f.result())
            if on_done:
                on_done(rows[-1])
    return rows


def run_ray(run_job: Job, jobs: list[dict[str, Any]], kw: dict[str, Any], workers: int,
             on_done: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    try:  # function-level import: Ray is an optional extra
        import ray
    except ImportError as exc:
        raise FaroError("--executor ray needs Ray: pip install 'faro[ray]' (or pip install ray)") from exc
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=workers if not os.environ.get("RAY_ADDRESS") else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(run_job)
        pending = [remote.remote(j, **kw) for j in jobs]
        rows = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            rows.append(ray.get(done[0]))
            if on_done:
                on_done(rows[-1])
        return rows
    finally:
        if started:
            ray.shutdown()


EXECUTORS = {"local": run_local, "ray": run_ray}
