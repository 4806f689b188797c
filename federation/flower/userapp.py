"""A user's own model, data and training function on SuperNodes: the app module a Flower run names.

The run's ``app`` entry is a module path (``secagg run --runtime flower --app mypackage.fedjob``) that every
node imports; it must be installed there (copy :mod:`federation.flower.app_template`). It defines::

    def client(partition_id: int, config: ExperimentConfig) -> ClientJob   # on each client's SuperNode
    def server(config: ExperimentConfig) -> ServerJob                      # on the SuperLink's machine

Without an app the built-in job (:func:`federation.experiment.local_client`, ``build_federation``) runs.
The public weight bound comes from neither: the server takes the largest example count the clients report
when greeted and sends it with the enrolment, which every node pins (:mod:`federation.flower.enrolment`).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, Dataset

from federation.client import FederatedClient, TrainFn, train_epoch
from federation.errors import ConfigError
from federation.experiment import ExperimentConfig, RemoteClients, build_federation, local_client
from federation.flower.job import FlowerJob
from federation.server import Federation


@dataclass(frozen=True)
class ClientJob:
    """One client's own pieces: its model (the global model's architecture), optimizer, data and the training
    function ``train_fn(model, loader, optimizer)`` called once per local epoch (see :mod:`federation.client`)."""

    model: nn.Module
    optimizer: Optimizer
    loader: DataLoader
    train_fn: TrainFn = train_epoch


@dataclass(frozen=True)
class ServerJob:
    """The server's pieces: the global model (its initial weights are round 1's broadcast), an optional test
    set evaluated after every round, its loss, and what the inputs went through (saved beside the model)."""

    model: nn.Module
    test_data: Dataset | None = None
    loss_fn: nn.Module | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UserApp:
    """An imported app module's two entry points."""

    name: str
    client: Callable[[int, ExperimentConfig], ClientJob]
    server: Callable[[ExperimentConfig], ServerJob]


@functools.lru_cache(maxsize=8)
def load_app(name: str) -> UserApp:
    """Import app module ``name``; :class:`ConfigError` if it is not installed or lacks ``client``/``server``."""
    try:
        module: ModuleType = importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(f"app {name!r} cannot be imported on this machine: {err}") from None
    entries = {entry: getattr(module, entry, None) for entry in ("client", "server")}
    missing = [entry for entry, value in entries.items() if not callable(value)]
    if missing:
        raise ConfigError(f"app {name!r} defines no {' or '.join(missing)} function (see "
                          "federation/flower/app_template.py)")
    return UserApp(name, entries["client"], entries["server"])


def node_client(job: FlowerJob, index: int) -> FederatedClient:
    """Client ``index`` on its SuperNode: the app's own job, or the built-in one."""
    config = job.config
    if not 0 <= index < config.clients:
        raise ConfigError(f"client index {index} outside 0..{config.clients - 1}")
    if job.app is None:
        return local_client(config, index)[0]
    own = load_app(job.app).client(index, config)
    if not isinstance(own, ClientJob):
        raise ConfigError(f"app {job.app!r}: client() returned {type(own).__name__}, not a ClientJob")
    return FederatedClient(own.model, own.optimizer, own.loader, own.train_fn, local_epochs=config.local_epochs,
                           proximal_mu=config.strategy.client_proximal_mu)


def server_federation(job: FlowerJob, remote: RemoteClients) -> Federation:
    """The server's federation over the ``remote`` clients: the app's global model and test set, or the
    built-in job's; the protection and DP modes are the run's, made for the remote parties."""
    config, out = job.config, job.out
    if job.app is None:
        return build_federation(config, checkpoint_dir=out, remote=remote)
    own = load_app(job.app).server(config)
    if not isinstance(own, ServerJob):
        raise ConfigError(f"app {job.app!r}: server() returned {type(own).__name__}, not a ServerJob")
    federation = Federation(own.model, secure=config.protection(), dp=config.privacy_mode(), runtime=remote.runtime,
                            parties=remote.parties, test_data=own.test_data, loss_fn=own.loss_fn,
                            checkpoint_dir=Path(out), config=config.federation_config(),
                            preprocessing=own.preprocessing, run_info={"app": job.app},
                            description={**config.describe(), "app": job.app})
    remote.register(federation)
    federation.prepare()
    return federation
