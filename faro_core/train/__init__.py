"""Training: the config, the method registry, ProxyGDA, and the loop that writes runs.

``train(config, store=None, run_id=None, resume=False, progress=True, on_step=None, inputs=None) -> Run``.
Modules: :mod:`~faro_core.train.config`, :mod:`~faro_core.train.methods`, :mod:`~faro_core.train.inputs`,
:mod:`~faro_core.train.backends`, :mod:`~faro_core.train.proxy_gda`, :mod:`~faro_core.train.stepper`,
:mod:`~faro_core.train.selection`, :mod:`~faro_core.train.checkpoint`, :mod:`~faro_core.train.outputs`,
:mod:`~faro_core.train.loop`, :mod:`~faro_core.train.expgrad`, :mod:`~faro_core.train.launch`.

The names below load their module on first use, so that reading the method registry (the dashboard's
first screen does, for labels and colours) does not import torch and the whole trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {"FaroConfig": "faro_core.train.config", "ProxyGDA": "faro_core.train.proxy_gda",
          "TrainInputs": "faro_core.train.inputs", "bt_loss": "faro_core.models.reward",
          "load_training_data": "faro_core.train.inputs", "train": "faro_core.train.loop"}
__all__ = ["FaroConfig", "ProxyGDA", "TrainInputs", "bt_loss", "load_training_data", "train"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'faro_core.train' has no attribute {name!r}")
