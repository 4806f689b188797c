"""A complete simulated job from a handful of settings: what ``secagg run`` and the benchmarks build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from federation.client import FederatedClient, train_epoch
from federation.data import load_dataset
from federation.errors import ConfigError
from federation.experiment_config import ExperimentConfig, PrivacySettings
from federation.models import mlp
from federation.modes import DatasetName, DPMode, PartitionScheme, SecureMode
from federation.partition import partition_dataset
from federation.protection import RemoteParties, weight_bound
from federation.runtime import Runtime
from federation.server import Federation

# re-exported: these lived here before the settings moved to torch-free modules
__all__ = ["DPMode", "DatasetName", "ExperimentConfig", "PartitionScheme", "PrivacySettings", "RemoteClients",
           "SecureMode", "build_federation", "local_client"]



def _job(config: ExperimentConfig) -> tuple[Any, torch.nn.Module, torch.optim.Optimizer, list]:
    data = load_dataset(config.dataset, seed=config.seed)
    torch.manual_seed(config.seed)
    model = mlp(data.num_features, data.num_classes, config.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    shards = partition_dataset(data.train, config.clients, config.partition, alpha=config.alpha, seed=config.seed)
    return data, model, optimizer, shards


def local_client(config: ExperimentConfig, index: int) -> tuple[FederatedClient, float]:
    """Client ``index`` of the job, as a process of its own builds it, and the public weight bound."""
    if not 0 <= index < config.clients:
        raise ConfigError(f"client index {index} outside 0..{config.clients - 1}")
    _, model, optimizer, shards = _job(config)
    loader = DataLoader(shards[index], batch_size=config.batch_size, shuffle=True)
    client = FederatedClient(model, optimizer, loader, train_epoch, local_epochs=config.local_epochs,
                             proximal_mu=config.strategy.client_proximal_mu)
    return client, weight_bound(config.privacy_mode(), [len(s) for s in shards])


def build_federation(config: ExperimentConfig, checkpoint_dir: Path | None = None, *,
                     remote: RemoteClients | None = None, overwrite: bool = False,
                     threads: int | None = None) -> Federation:
    """Dataset, partition, model and clients for ``config``, wired into a :class:`Federation` through the
    public API (``secure=``, ``dp=``); everything the clients determine is checked before it returns.

    ``threads``: torch's threads while the in-process clients train (:mod:`federation.threads`).
    With ``remote``, clients run elsewhere: its runtime reaches them, and the protection mode is made for its
    parties; the example counts they reported must be the built-in partition's.
    """
    data, model, optimizer, shards = _job(config)
    run_info = config.describe()
    run_info.pop("rounds")
    sizes = [len(s) for s in shards]
    common: dict[str, Any] = dict(test_data=data.test, checkpoint_dir=checkpoint_dir, overwrite=overwrite,
                                  run_info={"experiment": run_info}, config=config.federation_config(),
                                  preprocessing=data.preprocessing, description=config.describe())
    if remote is not None:
        if list(remote.examples) != sizes:
            raise ConfigError(f"the clients report {list(remote.examples)} examples, the built-in job's partition "
                              f"has {sizes}: are the nodes running another version?")
        federation = Federation(model, secure=config.protection(), dp=config.privacy_mode(), runtime=remote.runtime,
                                parties=remote.parties, **common)
        remote.register(federation)
    else:
        federation = Federation(model, secure=config.protection(), dp=config.privacy_mode(), threads=threads,
                                **common)
        for shard in shards:
            federation.add_client(DataLoader(shard, batch_size=config.batch_size, shuffle=True), optimizer)
    federation.prepare()
    return federation


@dataclass(frozen=True)
class RemoteClients:
    """Clients in other processes: the runtime that reaches them, the other parties as the server knows them,
    and, in client-id order, each client's address and the example count and batches per epoch it reported."""

    runtime: Runtime
    parties: RemoteParties
    addresses: tuple[Any, ...]
    examples: tuple[int, ...]
    batches: tuple[int, ...]

    def register(self, federation: Federation) -> None:
        for address, examples, batches in zip(self.addresses, self.examples, self.batches):
            federation.add_remote_client(address, examples, batches)
