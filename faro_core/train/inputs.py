"""What a training run reads: the data (loaded, skewed, split, coded) and the feature cache.

:class:`TrainInputs` is injected into :func:`faro_core.train.loop.train`; the default loads everything
afresh. A sweep that trains many configs on the same data passes one that memoizes
(:class:`faro_core.studies.inprocess.SharedInputs`), so no module's globals are patched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from faro_core.data import load
from faro_core.data.splits import split_by
from faro_core.fairness.attributes import attribute_strategy
from faro_core.fairness.pairs import GroupIndex, dp_strata_in_scope, stratum_labels
from faro_core.models.features import FeatureCache
from faro_core.train.config import FaroConfig, default_attribute, default_split_by

SPLITS = ("train", "val", "test")


def load_training_data(config: FaroConfig) -> tuple[Any, pd.DataFrame, GroupIndex]:
    """(PreferenceData, frame with ``split``, ``cluster`` (the split unit's cluster of each pair) and ``stratum``
    columns, GroupIndex) for a config."""
    data = load(config.data, format=config.format, group=config.group, strata=config.strata,
                skew=config.skew, seed=config.data_seed, groups=config.groups)
    attribute = config.attribute or default_attribute(config.data, config.format, config.role_columns)
    strategy = attribute_strategy(attribute)
    data.df = strategy.prepare(data.df, config.role_columns, name=data.name)
    strata = strategy.default_strata(data.strata)
    if config.strata is None and strata is not None:
        data.strata = strata
    unit = config.split_by or default_split_by(config.data, config.format)
    parts = split_by(data, unit, config.val_frac, config.test_frac, seed=config.data_seed)
    frames = [p.df.assign(split=name) for name, p in parts.items() if len(p.df)]
    df = pd.concat(frames, ignore_index=True)
    strata_cols = list(data.strata)
    df["stratum"] = stratum_labels(df, strata_cols)
    resp = sorted(set(df["chosen_group"].dropna()) | set(df["rejected_group"].dropna()))
    strata = sorted(df["stratum"].unique())
    index = GroupIndex(response_groups=resp, pair_groups=sorted(set(df["group"].dropna())), strata=strata,
                       dp_strata=dp_strata_in_scope(df, strata_cols, config.dp_scope),
                       dp_partner=bool(config.dp_partner), attribute=attribute)
    return data, df, index


def split_indices(df: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Row positions of each split of a training frame (``split`` column): ``{split: idx [n_split]}``."""
    return {s: torch.from_numpy(np.flatnonzero((df["split"] == s).to_numpy())) for s in SPLITS}


@dataclass
class TrainInputs:
    """Where a run gets its data and its features from.

    ``load(config) -> (PreferenceData, frame with split and stratum columns, GroupIndex)``;
    ``feature_cache(backbone, max_length=..., progress=...) -> FeatureCache``-like object with ``encode``.
    """

    load: Callable[[FaroConfig], tuple[Any, pd.DataFrame, GroupIndex]] = field(default=None)  # type: ignore[assignment]
    feature_cache: Callable[..., Any] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.load is None:
            self.load = load_training_data
        if self.feature_cache is None:
            self.feature_cache = FeatureCache
