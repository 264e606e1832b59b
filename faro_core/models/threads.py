"""How many CPU threads torch uses where: every idle core for encoders and language models, one for head steps.

A frozen encoder's forward (MiniLM over a batch of 64 texts) is large matmuls that scale with cores; a head
step is a few small ones that do not, and sweeps run one head-mode process per core. So the trainer sets one
thread for its steps and :func:`encoding_threads` raises it for the encoder's passes only (measurements:
docs/TRAINING.md, ``bench/cache.py``); :func:`kept_threads` gives the caller its own count back when training
returns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

THREADS_ENV = "FARO_TORCH_THREADS"


def torch_threads() -> int:
    """Intra-op threads for CPU inference: ``$FARO_TORCH_THREADS`` if set, else the idle cores (>= 1).

    Idle cores are the cores minus the 1-minute load average, rounded: on a loaded machine OpenMP workers
    spin-wait for busy cores, so fewer threads are faster (measurements: docs/POLICY.md).
    """
    env = os.environ.get(THREADS_ENV)
    if env:
        return max(1, int(env))
    n = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(n, int(round(n - load))))


@contextlib.contextmanager
def encoding_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with ``threads`` torch threads (default :func:`torch_threads`), then restore the caller's
    count (e.g. a head-mode trainer's one thread). Yields the count used."""
    import torch  # lazily: this module is imported where torch need not be loaded (the policy layer)

    before = torch.get_num_threads()
    n = torch_threads() if threads is None else max(1, int(threads))
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextlib.contextmanager
def kept_threads() -> Iterator[None]:
    """Run the block, then restore the caller's torch thread count, whatever the block set (a head-mode trainer
    sets one thread for its steps; the count is process state, so without this it would outlive the call and
    slow, or change the float order of, whatever the caller runs next)."""
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
