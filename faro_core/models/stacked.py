"""M reward heads with their weights stacked, trained as one module: the model of the batched engine.

``StackedHeads`` holds M heads of :class:`~faro_core.models.reward.HeadRewardModel`'s architecture
(``in_dim -> hidden -> 1`` with GELU, or linear when ``hidden = 0``), each layer's weights stacked along a
leading member axis in ``nn.Linear``'s layout: ``w1 [M, hidden, in_dim]``, ``b1 [M, hidden]``,
``w2 [M, 1, hidden]``, ``b2 [M, 1]``.

Forward: features ``x [R, d]`` (the same rows for every member) or ``x [M, R, d]`` (member m's own rows,
e.g. gathered by an index tensor ``[M, R]`` when the members' batch orders differ) -> rewards ``[M, R]``.
One module call scores every member and one backward of the members' summed losses gives every member's
gradients (the sum passes each member's own loss gradient through unchanged); one Adam step over the
stacked tensors updates them all (Adam is element-wise, so each member's update is its solo update).

Exactness: on a CPU member m is computed with exactly the operations a ``HeadRewardModel`` uses (``F.linear``
is ``addmm(b, x, W^T)``), on its own slices of the stacked weights, so its rewards, gradients and updates are
bit for bit those of a solo run, whatever the other members. A batched ``torch.bmm`` would not be (its
kernel depends on the stack's size), and on a CPU it costs what the per-member products cost; a GPU path, one
``baddbmm`` per layer, would be exact only to float rounding (measurements: docs/TRAINING.md, "Batched
sweeps").

``state_dict`` of a stack of one (and :meth:`member_state` of any member) uses ``HeadRewardModel``'s keys
and shapes (``net.0.weight`` ...), so exported models and checkpoints keep their format and load into a
``HeadRewardModel`` for scoring.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class StackedHeads(nn.Module):
    """M scalar reward heads, weights stacked on a leading member axis (see the module docstring).

    ``forward(x)``: ``x [R, d]`` or ``[M, R, d]`` -> rewards ``[M, R]``; a stack of one given ``[R, d]``
    returns ``[R]`` (the shape of a single head's rewards)."""

    def __init__(self, n_members: int, in_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.n_members, self.in_dim, self.hidden = int(n_members), int(in_dim), int(hidden)
        m = self.n_members
        if hidden > 0:
            self.w1 = nn.Parameter(torch.empty(m, hidden, in_dim))
            self.b1 = nn.Parameter(torch.empty(m, hidden))
            self.w2 = nn.Parameter(torch.empty(m, 1, hidden))
            self.b2 = nn.Parameter(torch.empty(m, 1))
        else:
            self.w1 = nn.Parameter(torch.empty(m, 1, in_dim))
            self.b1 = nn.Parameter(torch.empty(m, 1))
        self._register_state_dict_hook(_to_head_layout)
        self._register_load_state_dict_pre_hook(_from_head_layout, with_module=True)

    # -- building -----------------------------------------------------------------------------------
    @classmethod
    def from_heads(cls, heads: list[nn.Module]) -> StackedHeads:
        """A stack of the given ``HeadRewardModel`` heads (same architecture), weights copied."""
        first = heads[0]
        out = cls(len(heads), first.in_dim, first.hidden)
        with torch.no_grad():
            for m, head in enumerate(heads):
                out.load_member(m, head.state_dict())
        return out

    @classmethod
    def seeded(cls, in_dim: int, hidden: int, seeds: list[int]) -> StackedHeads:
        """A stack of freshly initialized heads, member m initialized exactly as ``HeadRewardModel(in_dim,
        hidden)`` right after ``torch.manual_seed(seeds[m])`` (the global RNG is left as that last init left
        it, as a solo run's is)."""
        from faro_core.models.reward import HeadRewardModel

        heads = []
        for s in seeds:
            torch.manual_seed(int(s))
            heads.append(HeadRewardModel(in_dim, hidden))
        return cls.from_heads(heads)

    def _layers(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        return [(self.w1, self.b1), (self.w2, self.b2)] if self.hidden > 0 else [(self.w1, self.b1)]

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: Tensor | list[Tensor]) -> Tensor | list[Tensor]:
        """Rewards of each member on its rows: ``x [R, d]`` (shared) or ``[M, R, d]`` -> ``[M, R]`` (``[R]`` for
        a stack of one given ``[R, d]``); a list of M tensors ``[R_m, d]`` (ragged) -> a list of ``[R_m]``."""
        m = self.n_members
        ragged = isinstance(x, list | tuple)
        rows = list(x) if ragged else [x] * m if x.dim() == 2 else list(x.unbind(0))
        if len(rows) != m:
            raise ValueError(f"{len(rows)} row blocks for a stack of {m} heads")
        layers = [tuple(t.unbind(0)) for pair in self._layers() for t in pair]
        out = []
        for i, h in enumerate(rows):
            # member i exactly as HeadRewardModel computes it: F.linear = addmm(b, x, W^T), GELU, addmm
            for j in range(0, len(layers), 2):
                if j:
                    h = F.gelu(h)
                h = torch.addmm(layers[j + 1][i], h, layers[j][i].t())
            out.append(h.squeeze(-1))
        if ragged:
            return out
        if x.dim() == 2 and m == 1:
            return out[0]
        return torch.stack(out)

    def member_forward(self, m: int, x: Tensor) -> Tensor:
        """Member ``m``'s rewards ``[R]`` on rows ``x [R, d]`` (the same operations as :meth:`forward`)."""
        h = x
        for j, (w, b) in enumerate(self._layers()):
            if j:
                h = F.gelu(h)
            h = torch.addmm(b[m], h, w[m].t())
        return h.squeeze(-1)

    # -- members ------------------------------------------------------------------------------------
    def member_state(self, m: int) -> dict[str, Tensor]:
        """Member ``m``'s weights as a ``HeadRewardModel`` state dict (copies)."""
        names = ["net.0", "net.2"] if self.hidden > 0 else ["net.0"]
        out: dict[str, Tensor] = {}
        for name, (w, b) in zip(names, self._layers()):
            out[f"{name}.weight"] = w.detach()[m].clone()
            out[f"{name}.bias"] = b.detach()[m].clone()
        return out

    @torch.no_grad()
    def load_member(self, m: int, state: dict[str, Tensor]) -> None:
        """Set member ``m``'s weights from a ``HeadRewardModel`` state dict."""
        names = ["net.0", "net.2"] if self.hidden > 0 else ["net.0"]
        for name, (w, b) in zip(names, self._layers()):
            w[m].copy_(state[f"{name}.weight"])
            b[m].copy_(state[f"{name}.bias"])

    def subset(self, keep: list[int]) -> StackedHeads:
        """A new stack of the members ``keep`` (weights copied, in that order)."""
        out = StackedHeads(len(keep), self.in_dim, self.hidden)
        idx = torch.tensor(keep, dtype=torch.long)
        with torch.no_grad():
            for (w, b), (w_new, b_new) in zip(self._layers(), out._layers()):
                w_new.copy_(w.index_select(0, idx))
                b_new.copy_(b.index_select(0, idx))
        return out.train(self.training)

    def nbytes_per_member(self) -> int:
        """Bytes of one member's parameters (float32)."""
        return sum(p[0].numel() * p.element_size() for p in self.parameters())


def _to_head_layout(module: StackedHeads, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """state_dict hook: a stack of one saves under ``HeadRewardModel``'s keys and shapes."""
    if module.n_members != 1:
        return
    names = ["net.0", "net.2"] if module.hidden > 0 else ["net.0"]
    params = ["w1", "b1", "w2", "b2"] if module.hidden > 0 else ["w1", "b1"]
    for i, p in enumerate(params):
        t = state.pop(prefix + p)
        state[f"{prefix}{names[i // 2]}.{'weight' if i % 2 == 0 else 'bias'}"] = t[0]


def _from_head_layout(module: StackedHeads, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: accept ``HeadRewardModel``'s keys for a stack of one."""
    names = ["net.0", "net.2"] if module.hidden > 0 else ["net.0"]
    params = ["w1", "b1", "w2", "b2"] if module.hidden > 0 else ["w1", "b1"]
    for i, p in enumerate(params):
        key = f"{prefix}{names[i // 2]}.{'weight' if i % 2 == 0 else 'bias'}"
        if key in state:
            state[prefix + p] = state.pop(key).unsqueeze(0)
