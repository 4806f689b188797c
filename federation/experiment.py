"""A complete simulated job from a handful of settings: what ``secagg run`` and the benchmarks build."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from federation.data import DatasetName, load_dataset
from federation.errors import ConfigError
from federation.models import mlp
from federation.partition import PartitionScheme, partition_dataset
from federation.server import Federation, FederationConfig
from federation.strategy import Strategy
from secagg.aggregation import Aggregator
from secagg.ckks import CKKSAggregator, CKKSParams
from secagg.masking import MaskingAggregator, MaskingConfig
from secagg.plaintext import PlaintextAggregator


class SecureMode(enum.Enum):
    """How client updates are hidden from the server."""

    NONE = "none"
    MASK = "mask"
    CKKS = "ckks"


class DPMode(enum.Enum):
    """Where differential-privacy noise is added."""

    NONE = "none"


@dataclass(frozen=True)
class ExperimentConfig:
    dataset: DatasetName = DatasetName.DIGITS
    clients: int = 10
    clients_per_round: int | float | None = None
    rounds: int = 20
    local_epochs: int = 5
    batch_size: int = 16
    lr: float = 0.1
    partition: PartitionScheme = PartitionScheme.DIRICHLET
    alpha: float = 0.5
    strategy: Strategy = field(default_factory=Strategy)
    secure: SecureMode = SecureMode.NONE
    dp: DPMode = DPMode.NONE
    dropout: float = 0.0
    min_clients: int = 1
    seed: int = 0
    hidden: int = 64
    masking: MaskingConfig = field(default_factory=MaskingConfig)

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise ConfigError(f"need at least one client, got {self.clients}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be positive, got {self.lr}")
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be positive, got {self.alpha}")
        if self.hidden < 1:
            raise ConfigError(f"hidden width must be at least 1, got {self.hidden}")
        self.federation_config()  # validates the round-loop settings
        if self.secure is SecureMode.MASK:
            self.masking.encoder(1, self.clients)  # refuses a ring too small for this many clients
        if self.secure is SecureMode.CKKS:
            CKKSParams(clip=self.masking.clip).check_clients(self.clients)

    def federation_config(self) -> FederationConfig:
        return FederationConfig(rounds=self.rounds, clients_per_round=self.clients_per_round,
                                local_epochs=self.local_epochs, strategy=self.strategy, dropout=self.dropout,
                                min_clients=self.min_clients, seed=self.seed)

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings (enums by value)."""
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, enum.Enum):
                d[key] = value.value
        d["strategy"] = {**asdict(self.strategy), "name": self.strategy.name.value}
        if self.secure is SecureMode.NONE:
            d.pop("masking")
        elif self.secure is SecureMode.CKKS:
            d["masking"] = {"clip": self.masking.clip}
        return d


def make_aggregator(config: ExperimentConfig, max_weight: float) -> Aggregator:
    """The protection mode; ``max_weight`` is the public bound on a client's weight (its example count)."""
    if config.secure is SecureMode.MASK:
        return MaskingAggregator(replace(config.masking, max_weight=max_weight))
    if config.secure is SecureMode.CKKS:
        return CKKSAggregator(CKKSParams(clip=config.masking.clip, max_weight=max_weight),
                              min_clients=max(2, config.min_clients))
    return PlaintextAggregator()


def build_federation(config: ExperimentConfig, checkpoint_dir: Path | None = None) -> Federation:
    """Dataset, partition, model and clients for ``config``, wired into a :class:`Federation`."""
    data = load_dataset(config.dataset, seed=config.seed)
    torch.manual_seed(config.seed)
    model = mlp(data.num_features, data.num_classes, config.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    run_info = config.describe()
    run_info.pop("rounds")
    shards = partition_dataset(data.train, config.clients, config.partition, alpha=config.alpha, seed=config.seed)
    aggregator = make_aggregator(config, max_weight=float(max(len(s) for s in shards)))
    federation = Federation(model, test_data=data.test, aggregator=aggregator, checkpoint_dir=checkpoint_dir,
                            run_info={"experiment": run_info}, config=config.federation_config())
    for shard in shards:
        federation.add_client(DataLoader(shard, batch_size=config.batch_size, shuffle=True), optimizer)
    return federation
