"""Constraint-only batches of whole items for the role constraints (:mod:`faro_core.fairness.role`).

DP(role) compares the biased and the counter answer *of one item*, and in an ambiguous BBQ item both are
*rejected* responses, of the item's two pairs (correct "unknown" vs each). A Bradley-Terry batch of 128
pairs drawn from ~29k rarely holds both pairs of an item, so the role terms are estimated on a batch of
their own: each step draws ``n_items`` training items (seeded by the step, so a resumed run replays it) and
adds all their pairs to the step's forward pass after the Bradley-Terry pairs. Those pairs carry no
Bradley-Terry loss; they enter the loss only through :meth:`~faro_core.train.proxy_gda.ProxyGDA.item_penalty`,
scaled by (items in the pool) / (items drawn), an unbiased estimate of the population penalty term.
"""

from __future__ import annotations

import numpy as np
import torch


class RoleItemBatches:
    """Items of the training shard that a role constraint counts, and the per-step draw of them.

    ``tens`` is the trainer's PairTensors (with role codes), ``train_idx`` [n] the shard's global pair indices,
    ``constraints`` the active role constraints (their :meth:`members` decide which items count).
    """

    def __init__(self, tens, train_idx: torch.Tensor, constraints: list, n_items: int, seed: int) -> None:
        from faro_core.fairness.role import ItemTable

        zero = torch.zeros(len(train_idx))
        tab = ItemTable(tens.batch(train_idx, (zero, zero, zero, zero)))
        member = torch.zeros(len(tab), dtype=torch.bool)
        for c in constraints:
            member |= c.members(tab)[0]
        pos = tab.pair_item.numpy()
        keep = pos >= 0
        order = np.argsort(pos[keep], kind="stable")
        pairs = train_idx.numpy()[keep][order]
        starts = np.searchsorted(pos[keep][order], np.arange(len(tab) + 1))
        self.items = [pairs[starts[k]:starts[k + 1]] for k in range(len(tab)) if bool(member[k])]
        self.n_items = min(int(n_items), len(self.items))
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.items)

    def draw(self, step: int) -> torch.Tensor:
        """Global pair indices of the items drawn for training step ``step`` (all their pairs)."""
        if not self.items:
            return torch.zeros(0, dtype=torch.long)
        g = torch.Generator().manual_seed(self.seed * 15_485_863 + 7 * step + 1)
        pick = torch.randperm(len(self.items), generator=g)[:self.n_items].tolist()
        return torch.from_numpy(np.concatenate([self.items[k] for k in pick]).astype(np.int64))

    @property
    def factor(self) -> float:
        """(items in the pool) / (items drawn): the scale of the item penalty."""
        return len(self.items) / max(self.n_items, 1)
