"""The optimizer every trainer path uses (the loop, the batched engine, the ExpGrad MLP fit, the benchmarks)."""

from __future__ import annotations

from typing import Any

import torch


def make_adam(params: Any, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam with the fused implementation where PyTorch has one (CPU and CUDA float32): one kernel for the
    whole update; the same update up to float rounding (speed: docs/TRAINING.md)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without a fused kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
