"""An app template: your own model, data and training function on Flower SuperNodes. Copy, then edit.

Copy this file into a package of your own that is installed on every machine of the run (the SuperLink's
and each SuperNode's), say ``mypackage/fedjob.py``, edit the three marked places, and run::

    secagg run --runtime flower --app mypackage.fedjob --secure mask --clients 3 --rounds 5

(or with ``--superlink HOST:PORT`` for SuperNodes you started yourself, each with
``--node-config partition-id=<i>``). The settings of ``secagg run`` reach both functions as ``config``
(``config.lr``, ``config.batch_size``, ``config.seed``, ...); the number of local epochs and FedProx's
proximal term are applied around your ``train_fn`` by the library.

What the library needs from your app:

* ``client(partition_id, config) -> ClientJob``: runs on client ``partition_id``'s SuperNode; the data it
  loads never leaves that machine, only the protected update does. Its model must have the same
  architecture (same parameters, same order) as the server's.
* ``server(config) -> ServerJob``: runs on the SuperLink's machine; the global model's initial weights are
  the first round's, and the test set (optional) is evaluated after every round.

Each client's weight in the average is its number of examples (``len(loader.dataset)``); the largest of
them is the public bound the encoders use, reported by the clients when greeted and pinned on every node.

As shipped, the data is synthetic (classes drawn around fixed centres), unless ``SECAGG_APP_DATA`` names a
directory with ``train-<partition_id>.npz`` (arrays ``x``: float features, ``y``: integer labels) on each
client node and ``test.npz`` on the server.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from federation.experiment_config import ExperimentConfig
from federation.flower.userapp import ClientJob, ServerJob

FEATURES, CLASSES = 16, 4


# 1. Your model: the same function builds the server's global model and every client's copy.
def build_model(config: ExperimentConfig) -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, config.hidden), nn.ReLU(), nn.Linear(config.hidden, CLASSES))


# 2. Your data: read the node's own files here.
def load_data(name: str, config: ExperimentConfig) -> TensorDataset:
    """``train-<i>`` (a client's shard) or ``test``: from ``$SECAGG_APP_DATA/<name>.npz`` if set, else
    synthetic (the same class centres everywhere, a different sample per shard)."""
    directory = os.environ.get("SECAGG_APP_DATA")
    if directory:
        with np.load(Path(directory) / f"{name}.npz", allow_pickle=False) as arrays:
            x, y = arrays["x"], arrays["y"]
    else:
        centres = np.random.default_rng(config.seed).normal(0.0, 1.0, (CLASSES, FEATURES))
        shard = -1 if name == "test" else int(name.rsplit("-", 1)[1])
        rng = np.random.default_rng([config.seed, shard + 1])
        count = 400 if name == "test" else 120 + 40 * (shard % 3)  # shards of different sizes
        y = rng.integers(0, CLASSES, count)
        x = centres[y] + rng.normal(0.0, 0.8, (count, FEATURES))
    return TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long))


# 3. Your training: one local epoch; the library calls it config.local_epochs times per round.
def train_fn(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    model.train()
    loss_fn, total, seen = nn.CrossEntropyLoss(), 0.0, 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        total, seen = total + loss.item() * len(y), seen + len(y)
    return total / max(seen, 1)  # the mean training loss, reported in the round's record


def client(partition_id: int, config: ExperimentConfig) -> ClientJob:
    """Client ``partition_id``'s model, optimizer, data and training function, on its own SuperNode."""
    torch.manual_seed(config.seed)
    model = build_model(config)
    loader = DataLoader(load_data(f"train-{partition_id}", config), batch_size=config.batch_size, shuffle=True)
    return ClientJob(model, torch.optim.SGD(model.parameters(), lr=config.lr), loader, train_fn)


def server(config: ExperimentConfig) -> ServerJob:
    """The global model and the server's test set."""
    torch.manual_seed(config.seed)
    return ServerJob(build_model(config), test_data=load_data("test", config))
