"""Federated training around existing PyTorch code, with secure aggregation and privacy plugged in."""

from federation.client import FederatedClient, train_epoch
from federation.data import DatasetName, FederatedData, load_dataset
from federation.errors import CheckpointError, ConfigError, DataError, FederationError
from federation.models import mlp
from federation.partition import PartitionScheme, partition_dataset
from federation.server import Federation, FederationConfig, RoundRecord, evaluate
from federation.strategy import Strategy, StrategyName

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DatasetName",
    "FederatedClient",
    "FederatedData",
    "Federation",
    "FederationConfig",
    "FederationError",
    "PartitionScheme",
    "RoundRecord",
    "Strategy",
    "StrategyName",
    "evaluate",
    "load_dataset",
    "mlp",
    "partition_dataset",
    "train_epoch",
]
