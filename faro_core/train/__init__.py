"""Training: the config, the method registry, ProxyGDA, and the loop that writes runs.

``train(config, store=None, run_id=None, resume=False, progress=True, on_step=None, inputs=None) -> Run``.
Modules: :mod:`~faro_core.train.config`, :mod:`~faro_core.train.methods`, :mod:`~faro_core.train.inputs`,
:mod:`~faro_core.train.backends`, :mod:`~faro_core.train.proxy_gda`, :mod:`~faro_core.train.stepper`,
:mod:`~faro_core.train.selection`, :mod:`~faro_core.train.checkpoint`, :mod:`~faro_core.train.outputs`,
:mod:`~faro_core.train.loop`, :mod:`~faro_core.train.expgrad`, :mod:`~faro_core.train.launch`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (PEP 562), so that importing faro_core.train.config -- the settings the CLI builds its
# flags from -- does not import torch.
_EXPORTS = {"FaroConfig": "faro_core.train.config", "ProxyGDA": "faro_core.train.proxy_gda",
            "TrainInputs": "faro_core.train.inputs", "bt_loss": "faro_core.models.reward",
            "load_training_data": "faro_core.train.inputs", "train": "faro_core.train.loop"}

__all__ = ["FaroConfig", "ProxyGDA", "TrainInputs", "bt_loss", "load_training_data", "train"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
