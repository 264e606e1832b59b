"""Preference pairs as the fairness layer sees them: group codes, the batch of scored pairs, cell statistics.

- :class:`GroupIndex`: integer codes for response groups, pair groups and strata, fixed per run.
- :class:`PairBatch`: rewards and attributes of B pairs, tensors of shape [B].
- :class:`PairTensors`: the attributes of all N pairs of a frame ([N] tensors); ``batch(idx, rewards)``
  gives the :class:`PairBatch` of the pairs ``idx``.
- :class:`CellStats`: sums and counts per cell ([C] each); they add, so batches and processes pool.
- :func:`stratum_labels`, :func:`order_bits`, :func:`dp_strata_in_scope`: the per-pair columns the codes
  are built from (a stratum label per pair, EO's random presentation bit, DP's scope).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from faro_core.errors import FaroError
from faro_core.fairness.attributes import DEFAULT_ATTRIBUTE, attribute_strategy


@dataclass
class GroupIndex:
    """Integer codes for groups and strata, fixed per run (from the training data)."""

    response_groups: list[str]  # groups that responses name (DP)
    pair_groups: list[str]  # pair-level sensitive attribute values (EO, CF)
    strata: list[str] = field(default_factory=lambda: ["all"])  # conditioning cells (DP, EO)
    dp_strata: list[str] | None = None  # strata where DP applies (None: all); see DemographicParity
    dp_partner: bool = True  # DP compares responses against the same kind of partner (see DemographicParity)
    attribute: str = DEFAULT_ATTRIBUTE  # DP/EO's sensitive attribute, a name in fairness.attributes.ATTRIBUTES

    def to_dict(self) -> dict[str, list[str] | bool | str | None]:
        out = {"response_groups": self.response_groups, "pair_groups": self.pair_groups, "strata": self.strata,
               "dp_strata": self.dp_strata, "dp_partner": self.dp_partner}
        # the default is left out, so the index of a run that predates the attribute reads the same
        return {**out, "attribute": self.attribute} if self.attribute != DEFAULT_ATTRIBUTE else out

    def dp_partner_kinds(self) -> list[str]:
        """DP's partner conditions: ``["vs-none", "vs-group"]`` (partner names no group / names one), or
        ``[]`` when DP pools them (``dp_partner=False``)."""
        return ["vs-none", "vs-group"] if self.dp_partner else []

    def dp_strata_codes(self) -> list[int]:
        """Codes (into :attr:`strata`) of the strata DP applies to, in order."""
        if self.dp_strata is None:
            return list(range(len(self.strata)))
        scope = set(self.dp_strata)
        return [i for i, s in enumerate(self.strata) if s in scope]


@dataclass
class PairBatch:
    """Rewards and attributes of B preference pairs. All tensors have shape [B].

    ``chosen_group``/``rejected_group``/``group`` are codes into :class:`GroupIndex` (-1: names no group).
    ``label`` is 1.0 when the chosen response is truly better (gold, or the observed label if no gold),
    0.0 when the rejected one is, NaN when unknown (such pairs are left out of EO).
    ``order`` is a fixed random bit per pair: EO looks at the pair as (y1, y2) = (chosen, rejected) if 0,
    else (rejected, chosen). ``cf_r_*`` are rewards of the counterfactual twins (NaN: no twin).
    With ``--attribute role`` the batch also carries ``role_item`` (code of the pair's item, -1: no role item)
    and ``chosen_role`` / ``rejected_role`` (0 biased, 1 counter, 2 neither; :mod:`faro_core.fairness.role`).
    """

    r_chosen: Tensor
    r_rejected: Tensor
    chosen_group: Tensor
    rejected_group: Tensor
    group: Tensor
    stratum: Tensor
    label: Tensor
    order: Tensor
    cf_r_chosen: Tensor
    cf_r_rejected: Tensor
    role_item: Tensor | None = None
    chosen_role: Tensor | None = None
    rejected_role: Tensor | None = None

    def __len__(self) -> int:
        return int(self.r_chosen.shape[0])


@dataclass
class CellStats:
    """Sums and counts per cell, shape [C] each. Add two to pool batches or processes."""

    num: Tensor
    cnt: Tensor
    num_ref: Tensor
    cnt_ref: Tensor

    def __add__(self, other: CellStats) -> CellStats:
        return CellStats(self.num + other.num, self.cnt + other.cnt, self.num_ref + other.num_ref,
                         self.cnt_ref + other.cnt_ref)

    def scaled(self, factor: float) -> CellStats:
        return CellStats(self.num * factor, self.cnt * factor, self.num_ref * factor, self.cnt_ref * factor)

    def detach(self) -> CellStats:
        return CellStats(self.num.detach(), self.cnt.detach(), self.num_ref.detach(), self.cnt_ref.detach())

    def stacked(self) -> Tensor:
        return torch.stack([self.num, self.cnt, self.num_ref, self.cnt_ref])

    @staticmethod
    def from_stacked(t: Tensor) -> CellStats:
        return CellStats(t[0], t[1], t[2], t[3])


def default_dp_scope(strata_cols: list[str]) -> str:
    """The scope DP holds in when the config leaves it open: BBQ-style data (a ``context_condition``
    stratum) -> ambiguous contexts only (see :class:`~faro_core.fairness.constraints.DemographicParity`); else all."""
    return "context_condition=ambig" if "context_condition" in strata_cols else "all"


def dp_strata_in_scope(df: pd.DataFrame, strata_cols: list[str], scope: str | None) -> list[str] | None:
    """Stratum labels DP applies to, from a scope ``"COLUMN=V1|V2"`` (``"all"``: every stratum -> None).

    The column must be one of the strata columns, so a stratum is either wholly in scope or wholly out.
    """
    scope = default_dp_scope(strata_cols) if scope is None else scope.strip()
    if scope in ("", "all"):
        return None
    col, sep, vals = scope.partition("=")
    col = col.strip()
    if not sep or not col or not vals.strip():
        raise FaroError(f"--dp-scope {scope!r}: expected COLUMN=VALUE[|VALUE…] or 'all'")
    if col not in strata_cols:
        raise FaroError(f"--dp-scope column {col!r} is not a strata column (strata: {', '.join(strata_cols) or 'none'});"
                        f" add it with --strata")
    wanted = {v.strip() for v in vals.split("|") if v.strip()}
    present = set(df[col].astype(str))
    if not wanted & present:
        raise FaroError(f"--dp-scope {scope!r}: no row has {col} in {sorted(wanted)} "
                        f"(values: {', '.join(sorted(present)[:10])})")
    return sorted(df.loc[df[col].astype(str).isin(wanted), "stratum"].unique())


def stratum_labels(df: pd.DataFrame, cols: list[str]) -> pd.Series:
    if not cols:
        return pd.Series(["all"] * len(df), index=df.index)
    return df[cols].astype(str).agg(",".join, axis=1)


def order_bits(pair_ids: pd.Series) -> np.ndarray:
    """A fixed random bit per pair (from its id): EO's random presentation order."""
    return np.array([hashlib.sha1(p.encode()).digest()[0] & 1 for p in pair_ids], dtype=np.int64)


@dataclass
class PairTensors:
    """Attributes of N pairs as tensors (all shape [N])."""

    chosen_group: torch.Tensor
    rejected_group: torch.Tensor
    group: torch.Tensor
    stratum: torch.Tensor
    label: torch.Tensor
    order: torch.Tensor
    has_twin: torch.Tensor
    role_item: torch.Tensor | None = None  # codes of a per-item attribute (Attribute.pair_codes): role's
    chosen_role: torch.Tensor | None = None
    rejected_role: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PairTensors:
        """A copy on ``device`` (kept, so later batches do not copy again)."""
        key = str(device)
        cache = self.__dict__.setdefault("_on", {})
        if key not in cache:
            cache[key] = PairTensors(**{k: v.to(device) for k, v in self.__dict__.items() if torch.is_tensor(v)})
        return cache[key]

    @classmethod
    def from_frame(cls, df: pd.DataFrame, index: GroupIndex) -> PairTensors:
        def codes(col: pd.Series, vocab: list[str]) -> torch.Tensor:
            pos = {v: i for i, v in enumerate(vocab)}
            return torch.tensor([pos.get(v, -1) if v is not None else -1 for v in col], dtype=torch.long)

        has_gold = df["gold"].notna().any()
        label = df["gold"].to_numpy(dtype=float) if has_gold else np.ones(len(df))
        twin = df["cf_chosen"].notna() & df["cf_rejected"].notna()
        if "cf_prompt" in df:
            twin &= df["cf_prompt"].notna()
        return cls(
            **attribute_strategy(index.attribute).pair_codes(df),
            chosen_group=codes(df["chosen_group"], index.response_groups),
            rejected_group=codes(df["rejected_group"], index.response_groups),
            group=codes(df["group"], index.pair_groups),
            stratum=codes(df["stratum"], index.strata).clamp_min(0),
            label=torch.tensor(label, dtype=torch.float32),
            order=torch.from_numpy(order_bits(df["pair_id"])),
            has_twin=torch.tensor(twin.to_numpy(), dtype=torch.bool),
        )

    def batch(self, idx: torch.Tensor, rewards: tuple[torch.Tensor, ...]) -> PairBatch:
        r_c, r_r, cf_c, cf_r = rewards
        if r_c.device != self.group.device:  # full mode on a GPU: attributes follow the rewards
            return self.to(r_c.device).batch(idx, rewards)
        role = (() if self.role_item is None else
                (self.role_item[idx], self.chosen_role[idx], self.rejected_role[idx]))
        return PairBatch(r_c, r_r, self.chosen_group[idx], self.rejected_group[idx], self.group[idx],
                         self.stratum[idx], self.label[idx], self.order[idx], cf_c, cf_r, *role)
