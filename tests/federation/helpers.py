"""Small jobs shared by the federation tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from federation.client import FederatedClient, train_epoch
from federation.data import DatasetName
from federation.experiment import ExperimentConfig
from federation.partition import PartitionScheme


def toy_client(seed: int = 0, n: int = 32, mu: float = 0.0) -> FederatedClient:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    return FederatedClient(model, optimizer, DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True),
                           train_epoch, proximal_mu=mu)


def small_config(**overrides) -> ExperimentConfig:
    base = dict(dataset=DatasetName.DIGITS, clients=4, rounds=3, local_epochs=1, batch_size=32,
                partition=PartitionScheme.IID, seed=5)
    return ExperimentConfig(**{**base, **overrides})
