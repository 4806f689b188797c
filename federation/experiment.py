"""A complete simulated job from a handful of settings: what ``secagg run`` and the benchmarks build."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from dp.adaptive import AdaptiveClipping
from dp.clipping import ClientLevelDP, ClientLevelDPAggregator, ClientLevelMode
from dp.dpsgd import DPSGDConfig
from dp.errors import InvalidPrivacyParameter
from dp.events import GaussianEvent
from dp.ledger import PrivacyLedger
from federation.client import FederatedClient, train_epoch
from federation.data import DatasetName, load_dataset
from federation.errors import ConfigError
from federation.models import mlp
from federation.partition import PartitionScheme, partition_dataset
from federation.privacy import PrivacyBook
from federation.runtime import Runtime
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
    """Where differential-privacy noise is added: in each client's SGD (example-level), by the server to the
    aggregate, or by the clients as shares of the aggregate's noise (client-level)."""

    NONE = "none"
    LOCAL = "local"
    CENTRAL = "central"
    DISTRIBUTED = "distributed"


@dataclass(frozen=True)
class PrivacySettings:
    """``noise_multiplier`` or ``target_epsilon`` (then the multiplier that reaches it over the whole run is
    computed); ``clip``: per-sample gradient norm (local) or update L2 norm (client-level; with
    ``adaptive_quantile``, the initial one, then adapted toward that quantile of the update norms, central DP
    only, see :mod:`dp.adaptive`; ``count_noise`` defaults to max(z, clients per round / 20))."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    clip: float = 1.0
    delta: float = 1e-5
    max_epsilon: float | None = None
    secure_mode: bool = False
    adaptive_quantile: float | None = None
    clip_learning_rate: float = 0.2
    count_noise: float | None = None

    def __post_init__(self) -> None:
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError("give exactly one of --noise-multiplier and --target-epsilon")
        for name in ("noise_multiplier", "target_epsilon", "max_epsilon"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be positive, got {value}")
        if not self.clip > 0:
            raise ConfigError(f"clip must be positive, got {self.clip}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")
        if self.adaptive_quantile is not None:
            try:
                self.adaptive(1.0)
            except InvalidPrivacyParameter as err:
                raise ConfigError(str(err)) from None

    def adaptive(self, noise_multiplier: float, clients_per_round: int = 1) -> AdaptiveClipping | None:
        if self.adaptive_quantile is None:
            return None
        count_noise = max(noise_multiplier, clients_per_round / 20) if self.count_noise is None else self.count_noise
        return AdaptiveClipping(self.adaptive_quantile, count_noise, self.clip_learning_rate)


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
    privacy: PrivacySettings | None = None

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
        if (self.dp is DPMode.NONE) != (self.privacy is None):
            raise ConfigError("--dp local|central|distributed needs --noise-multiplier or --target-epsilon"
                              if self.privacy is None else "privacy settings given without --dp")
        if self.privacy is not None and self.privacy.adaptive_quantile is not None:
            if self.dp is not DPMode.CENTRAL:
                raise ConfigError("--adaptive-clip works with --dp central only")
            if self.secure is not SecureMode.NONE and self.masking.clip < 0.5:
                raise ConfigError("--adaptive-clip sends each client's bit as +-0.5: --encode-clip must be >= 0.5")
        if self.dp is DPMode.DISTRIBUTED and self.secure is SecureMode.NONE:
            raise ConfigError("--dp distributed needs --secure mask or ckks: without secure aggregation the "
                              "server sees each client's noised update, so the noise shares protect nothing")

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
        if self.privacy is None:
            d.pop("privacy")
        if self.secure is SecureMode.NONE:
            d.pop("masking")
        elif self.secure is SecureMode.CKKS:
            d["masking"] = {"clip": self.masking.clip}
        return d


def make_aggregator(config: ExperimentConfig, max_weight: float) -> Aggregator:
    """The protection mode; ``max_weight`` is the public bound on a client's weight (its example count)."""
    if config.secure is SecureMode.MASK:
        return MaskingAggregator(masking_config(config, max_weight))
    if config.secure is SecureMode.CKKS:
        return CKKSAggregator(ckks_params(config, max_weight), min_clients=min_contributions(config))
    return PlaintextAggregator()


def masking_config(config: ExperimentConfig, max_weight: float) -> MaskingConfig:
    return replace(config.masking, max_weight=max_weight)


def ckks_params(config: ExperimentConfig, max_weight: float) -> CKKSParams:
    return CKKSParams(clip=config.masking.clip, max_weight=max_weight)


def min_contributions(config: ExperimentConfig) -> int:
    """Never release an aggregate of fewer than two (or --min-clients) contributions: the CKKS key holder's
    policy, and the floor of distributed DP's noise shares."""
    return max(2, config.min_clients)


def max_weight(config: ExperimentConfig, shard_sizes: list[int]) -> float:
    """The public bound on one client's weight: its example count, or 1 under client-level DP (uniform weights)."""
    return 1.0 if config.dp in (DPMode.CENTRAL, DPMode.DISTRIBUTED) else float(max(shard_sizes))


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
    if config.privacy is not None:
        raise ConfigError("differential privacy is not supported for remote clients yet")
    _, model, optimizer, shards = _job(config)
    loader = DataLoader(shards[index], batch_size=config.batch_size, shuffle=True)
    client = FederatedClient(model, optimizer, loader, train_epoch, local_epochs=config.local_epochs,
                             proximal_mu=config.strategy.client_proximal_mu)
    return client, max_weight(config, [len(s) for s in shards])


def build_federation(config: ExperimentConfig, checkpoint_dir: Path | None = None, *,
                     remote: RemoteClients | None = None) -> Federation:
    """Dataset, partition, model and clients for ``config``, wired into a :class:`Federation`.

    With ``remote``, clients run elsewhere: its runtime reaches them, and its aggregator (made for the
    public weight bound) is the server's side of the protection mode.
    """
    if config.secure is SecureMode.MASK:  # degree and threshold of a round: refused before any training
        config.masking.plan(config.federation_config().sample_size(config.clients))
    data, model, optimizer, shards = _job(config)
    run_info = config.describe()
    run_info.pop("rounds")
    weight_bound = max_weight(config, [len(s) for s in shards])
    if remote is not None:
        if config.privacy is not None:
            raise ConfigError("differential privacy is not supported for remote clients yet")
        federation = Federation(model, test_data=data.test, aggregator=remote.aggregator(weight_bound),
                                checkpoint_dir=checkpoint_dir, run_info={"experiment": run_info},
                                config=config.federation_config(), runtime=remote.runtime)
        for address in remote.addresses:
            federation.add_remote_client(address)
        return federation
    aggregator = make_aggregator(config, max_weight=weight_bound)
    dp_sgd, book = None, None
    if config.privacy is not None:
        z = noise_multiplier(config, min(len(s) for s in shards))
        book = PrivacyBook(PrivacyLedger(config.privacy.delta, config.privacy.max_epsilon), checkpoint_dir)
        if config.dp is DPMode.LOCAL:
            dp_sgd = DPSGDConfig(z, config.privacy.clip, config.privacy.secure_mode)
        else:
            mode = ClientLevelMode.CENTRAL if config.dp is DPMode.CENTRAL else ClientLevelMode.DISTRIBUTED
            per_round = config.federation_config().sample_size(config.clients)
            try:
                dp = ClientLevelDP(z, config.privacy.clip, mode, min_contributions(config),
                                   config.privacy.adaptive(z, per_round))
            except InvalidPrivacyParameter as err:
                raise ConfigError(str(err)) from None
            aggregator = ClientLevelDPAggregator(aggregator, dp)
            book.planned_population = (GaussianEvent(z),)
    federation = Federation(model, test_data=data.test, aggregator=aggregator, checkpoint_dir=checkpoint_dir,
                            run_info={"experiment": run_info}, config=config.federation_config(),
                            privacy=book, dp_sgd=dp_sgd)
    for shard in shards:
        federation.add_client(DataLoader(shard, batch_size=config.batch_size, shuffle=True), optimizer)
    return federation


@dataclass(frozen=True)
class RemoteClients:
    """Clients in other processes: the runtime that reaches them, their addresses (in client-id order) and
    how to make the server's side of the protection mode for a given public weight bound."""

    runtime: Runtime
    addresses: tuple[Any, ...]
    aggregator: Callable[[float], Aggregator]


def noise_multiplier(config: ExperimentConfig, smallest_client: int) -> float:
    """The configured multiplier, or the one that reaches --target-epsilon after every round (RDP).

    Local DP-SGD: the smallest client has the largest sampling rate and is the binding one. Client-level DP:
    no sampling amplification is claimed (clients are drawn without replacement, not by Poisson sampling).
    """
    privacy = config.privacy
    assert privacy is not None
    if privacy.noise_multiplier is not None:
        return privacy.noise_multiplier
    from opacus.accountants.utils import get_noise_multiplier

    if config.dp is DPMode.LOCAL:
        batches = math.ceil(smallest_client / config.batch_size)  # Opacus samples at rate 1 / batches
        rate, steps = 1.0 / batches, config.rounds * config.local_epochs * batches
    else:
        rate, steps = 1.0, config.rounds
    return float(get_noise_multiplier(target_epsilon=privacy.target_epsilon, target_delta=privacy.delta,
                                      sample_rate=rate, steps=steps, accountant="rdp"))
