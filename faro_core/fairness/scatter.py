"""Sums of values per cell: the one scatter every constraint's cell statistics are built from."""

from __future__ import annotations

import torch
from torch import Tensor


def scatter_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """[size] sums of ``values`` [N] by cell ``index`` [N] (codes in 0..size-1); differentiable in ``values``."""
    out = torch.zeros(size, dtype=values.dtype, device=values.device)
    return out.index_add(0, index, values)
