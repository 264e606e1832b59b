"""Batches of whole items for the role constraints (:mod:`faro_core.fairness.role`).

DP(role) compares the biased and the counter answer *of one item*, and in an ambiguous BBQ item both are
*rejected* responses, of the item's two pairs (correct "unknown" vs each). A Bradley-Terry batch of 128
pairs drawn pair by pair from ~29k rarely holds both pairs of an item, so the role terms need batches of whole
items. :class:`ItemBatches` is what ``faro train`` uses: when a role constraint is active, the Bradley-Terry
batch itself is drawn by whole items (each epoch a seeded permutation of the training shard's items, cut into
``steps_per_epoch`` batches of about ``batch_size`` pairs), so the role terms reuse the rewards of the step's
own forward pass; every item is in exactly one batch of an epoch, and the item penalty, scaled by
(batches per epoch) x (processes), sums over an epoch to the population term.
:class:`RoleItemBatches` is the older design, kept for ``FairRewardTrainer`` (whose batches TRL's sampler
draws pair by pair): each step draws ``n_items`` training items of their own (seeded by the step, so a resumed
run replays it), scored in a second forward, scaled by (items in the pool) / (items drawn).
"""

from __future__ import annotations

import numpy as np
import torch


class ItemBatches:
    """The Bradley-Terry batches of a training shard, drawn by whole items.

    ``shard`` [n] the shard's global pair indices, ``item`` [n] each pair's item code (``PairTensors.role_item``
    of the shard; -1: a pair of no role item, drawn on its own), ``batch_size`` the pairs per batch (per process),
    ``steps_per_epoch`` the batches of an epoch (the trainer's: ceil(training pairs / batch size)), ``world`` the
    processes. Epoch ``e``'s order is a permutation of the units (items, and the pairs of no item) seeded by
    (``seed``, ``e``), so a resumed run replays it; a unit goes to batch ``min(start // batch_size,
    steps_per_epoch - 1)``, ``start`` its first pair's position in the permuted order: batches of
    ``batch_size`` pairs give or take one item's pairs, each pair in exactly one batch per epoch.
    """

    def __init__(self, shard: torch.Tensor, item: torch.Tensor, batch_size: int, steps_per_epoch: int, seed: int,
                 world: int = 1) -> None:
        shard_np, item_np = shard.numpy(), item.numpy()
        assert len(shard_np) == len(item_np)
        n = len(shard_np)
        # a unit per item, and one per pair of no item (codes below every item's)
        unit_key = np.where(item_np >= 0, item_np, -1 - np.arange(n))
        _, unit = np.unique(unit_key, return_inverse=True)
        order = np.argsort(unit, kind="stable")  # the shard's pairs grouped by unit, in shard order within one
        self.pairs = shard_np[order].astype(np.int64)
        self.sizes = np.bincount(unit, minlength=int(unit.max()) + 1 if n else 0).astype(np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64) if n else self.sizes
        self.batch_size = max(1, int(batch_size))
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.seed, self.world = int(seed), max(1, int(world))
        self._epoch: tuple[int, np.ndarray, np.ndarray] | None = None  # (epoch, pairs in order, batch bounds)

    def __len__(self) -> int:
        """The units: items, and pairs of no item."""
        return len(self.sizes)

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(the shard's pairs in epoch ``epoch``'s order, bounds [steps_per_epoch + 1]): batch ``k`` is
        ``pairs[bounds[k]:bounds[k + 1]]``."""
        if self._epoch is not None and self._epoch[0] == epoch:
            return self._epoch[1], self._epoch[2]
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        perm = torch.randperm(len(self.sizes), generator=g).numpy()
        sizes = self.sizes[perm]
        pos = np.cumsum(sizes) - sizes  # each unit's first position in the permuted order
        flat = np.repeat(self.starts[perm] - pos, sizes) + np.arange(int(sizes.sum()))
        pairs = self.pairs[flat]
        batch = np.minimum(pos // self.batch_size, self.steps_per_epoch - 1)  # non-decreasing along perm
        bounds = np.searchsorted(np.repeat(batch, sizes), np.arange(self.steps_per_epoch + 1), side="left")
        self._epoch = (epoch, pairs, bounds)
        return pairs, bounds

    def draw(self, step: int) -> torch.Tensor:
        """Global pair indices of training step ``step``'s batch (0-based; whole items)."""
        epoch, k = divmod(int(step), self.steps_per_epoch)
        pairs, bounds = self.epoch(epoch)
        return torch.from_numpy(pairs[bounds[k]:bounds[k + 1]])

    @property
    def factor(self) -> float:
        """The item penalty's scale: (batches per epoch) x (processes). Every item is in one batch of an epoch,
        so ``factor * sum_{k in batch} coef_k psi_k`` averages, over an epoch's steps and the processes (whose
        gradients DDP averages), to ``sum_k coef_k psi_k`` over the whole training split."""
        return float(self.steps_per_epoch * self.world)


class RoleItemBatches:
    """Items of the training shard that a role constraint counts, and the per-step draw of them.

    ``tens`` is the trainer's PairTensors (with role codes), ``train_idx`` [n] the shard's global pair indices,
    ``constraints`` the active role constraints (their :meth:`members` decide which items count).
    """

    def __init__(self, tens, train_idx: torch.Tensor, constraints: list, n_items: int, seed: int) -> None:
        from faro_core.fairness.role_constraint import ItemTable

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
