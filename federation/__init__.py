"""Federated training around existing PyTorch code, with secure aggregation and privacy plugged in.

The public API::

    from federation import Federation, Masking, CKKS, DPSGD, CentralDP, DistributedDP

    federation = Federation(model, secure=Masking(), dp=DPSGD(target_epsilon=3.0), rounds=20, test_data=test)
    for loader in client_loaders:
        federation.add_client(loader, optimizer, train)
    history = federation.run()
    federation.save("runs/mine")   # results.json, ledger.json, metrics.png, model.npz: `secagg audit runs/mine`

Names are imported on first use, so ``import federation`` (and ``secagg --help``) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Federation": "federation.server",
    "FederationConfig": "federation.config",
    "evaluate": "federation.server",
    "Masking": "federation.config",
    "CKKS": "federation.config",
    "DPSGD": "federation.config",
    "CentralDP": "federation.config",
    "DistributedDP": "federation.config",
    "ClientSampling": "federation.config",
    "History": "federation.records",
    "RoundRecord": "federation.records",
    "RoundStatus": "federation.records",
    "FederatedClient": "federation.client",
    "EpochTrainer": "federation.client",
    "train_epoch": "federation.client",
    "save_model": "federation.model_io",
    "load_model": "federation.model_io",
    "DatasetName": "federation.modes",
    "FederatedData": "federation.data",
    "load_dataset": "federation.data",
    "mlp": "federation.models",
    "PartitionScheme": "federation.modes",
    "partition_dataset": "federation.partition",
    "Strategy": "federation.strategy",
    "StrategyName": "federation.strategy",
    "CheckpointError": "federation.errors",
    "ConfigError": "federation.errors",
    "DataError": "federation.errors",
    "FederationError": "federation.errors",
    "OutputError": "federation.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'federation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from federation.client import EpochTrainer, FederatedClient, train_epoch
    from federation.config import CKKS, DPSGD, CentralDP, ClientSampling, DistributedDP, Masking
    from federation.data import DatasetName, FederatedData, load_dataset
    from federation.errors import CheckpointError, ConfigError, DataError, FederationError, OutputError
    from federation.model_io import load_model, save_model
    from federation.models import mlp
    from federation.partition import PartitionScheme, partition_dataset
    from federation.records import History, RoundRecord, RoundStatus
    from federation.server import Federation, FederationConfig, evaluate
    from federation.strategy import Strategy, StrategyName
