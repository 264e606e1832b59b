"""Training: the config, ProxyGDA, and the trainer that writes runs."""

from faro_core.train.config import FaroConfig
from faro_core.train.proxy_gda import ProxyGDA, bt_loss
from faro_core.train.trainer import load_training_data, train

__all__ = ["FaroConfig", "ProxyGDA", "bt_loss", "load_training_data", "train"]
