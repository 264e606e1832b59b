"""Training: the config, the method registry, ProxyGDA, and the loop that writes runs.

``train(config, store=None, run_id=None, resume=False, progress=True, on_step=None, inputs=None) -> Run``.
Modules: :mod:`~faro_core.train.config`, :mod:`~faro_core.train.methods`, :mod:`~faro_core.train.inputs`,
:mod:`~faro_core.train.backends`, :mod:`~faro_core.train.proxy_gda`, :mod:`~faro_core.train.stepper`,
:mod:`~faro_core.train.selection`, :mod:`~faro_core.train.checkpoint`, :mod:`~faro_core.train.outputs`,
:mod:`~faro_core.train.loop`, :mod:`~faro_core.train.expgrad`, :mod:`~faro_core.train.launch`.
"""

from faro_core.models.reward import bt_loss
from faro_core.train.config import FaroConfig
from faro_core.train.inputs import TrainInputs, load_training_data
from faro_core.train.loop import train
from faro_core.train.proxy_gda import ProxyGDA

__all__ = ["FaroConfig", "ProxyGDA", "TrainInputs", "bt_loss", "load_training_data", "train"]
