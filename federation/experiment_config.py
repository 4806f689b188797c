"""The settings of a simulated job (what ``secagg run`` and the benchmarks build), importable without torch:
the command line validates them, and ``--resume`` compares them, before any data is loaded."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from federation import protection
from federation.config import CKKS, DPSGD, CentralDP, ClientSampling, DistributedDP, Masking, Privacy, Protection
from federation.errors import ConfigError
from federation.modes import DatasetName, DPMode, PartitionScheme, SecureMode
from federation.strategy import Strategy, StrategyName

if TYPE_CHECKING:
    from federation.config import FederationConfig
    from secagg.masking import MaskingConfig


def _default_masking() -> MaskingConfig:
    from secagg.masking import MaskingConfig

    return MaskingConfig()


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
            from dp.adaptive import AdaptiveClipping
            from dp.errors import InvalidPrivacyParameter

            try:
                count_noise = 1.0 if self.count_noise is None else self.count_noise
                AdaptiveClipping(self.adaptive_quantile, count_noise, self.clip_learning_rate)
            except InvalidPrivacyParameter as err:
                raise ConfigError(str(err)) from None


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
    masking: MaskingConfig = field(default_factory=_default_masking)
    privacy: PrivacySettings | None = None
    client_sampling: ClientSampling = ClientSampling.FIXED_SIZE

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
        # the ring, the masking graph, the CKKS modulus: refused before any data is loaded
        protection.check(self.protection(), self.privacy_mode(), self.population())

    def population(self) -> protection.Population:
        """The clients as the settings alone describe them (one example and one batch each): what a party
        that does not know the others' data sizes derives its stack from."""
        loop = self.federation_config()
        return protection.Population((1,) * self.clients, (1,) * self.clients, loop.sample_size(self.clients),
                                     self.min_clients, self.rounds, self.local_epochs,
                                     loop.sampling_rate(self.clients))

    def per_round(self) -> int:
        """The most clients a round samples: what the CKKS parameters are sized for, by every party of a run."""
        return self.federation_config().sample_size(self.clients)

    def federation_config(self) -> FederationConfig:
        from federation.config import FederationConfig

        return FederationConfig(rounds=self.rounds, clients_per_round=self.clients_per_round,
                                local_epochs=self.local_epochs, strategy=self.strategy, dropout=self.dropout,
                                min_clients=self.min_clients, seed=self.seed,
                                client_sampling=self.client_sampling)

    def protection(self) -> Protection:
        """The protection mode as the public API's setting."""
        m = self.masking
        if self.secure is SecureMode.MASK:
            return Masking(neighbors=m.neighbors, threshold=m.threshold, consistency_check=m.consistency_check,
                           clip=m.clip, precision_bits=m.precision_bits, quorum=m.quorum)
        return CKKS(clip=m.clip) if self.secure is SecureMode.CKKS else None

    def privacy_mode(self) -> Privacy:
        """The DP mode as the public API's setting."""
        p = self.privacy
        if p is None:
            return None
        budget = dict(noise_multiplier=p.noise_multiplier, target_epsilon=p.target_epsilon, delta=p.delta,
                      max_epsilon=p.max_epsilon)
        if self.dp is DPMode.LOCAL:
            return DPSGD(**budget, max_grad_norm=p.clip, secure_mode=p.secure_mode)
        if self.dp is DPMode.CENTRAL:
            return CentralDP(**budget, clip=p.clip, adaptive_quantile=p.adaptive_quantile,
                             clip_learning_rate=p.clip_learning_rate, count_noise=p.count_noise,
                             secure_mode=p.secure_mode)
        return DistributedDP(**budget, clip=p.clip)

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings (enums by value), as results.json records them."""
        d = self.to_dict()
        if self.privacy is None:
            d.pop("privacy")
        if self.secure is SecureMode.NONE:
            d.pop("masking")
        elif self.secure is SecureMode.CKKS:
            d["masking"] = {"clip": self.masking.clip}
        return d

    def to_dict(self) -> dict[str, Any]:
        """Every setting, JSON-ready; :meth:`from_dict` reads it back (what a Flower job carries)."""
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, enum.Enum):
                d[key] = value.value
        d["strategy"] = {**asdict(self.strategy), "name": self.strategy.name.value}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        """The configuration :meth:`to_dict` (or :meth:`describe`) wrote; unknown keys are refused."""
        if not isinstance(d, dict):
            raise ConfigError(f"bad run configuration: {d!r}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings {sorted(unknown)}")
        from secagg.errors import SecAggError
        from secagg.masking import MaskingConfig

        try:
            kw = dict(d)
            for key, kind in (("dataset", DatasetName), ("partition", PartitionScheme), ("secure", SecureMode),
                              ("dp", DPMode), ("client_sampling", ClientSampling)):
                if key in kw:
                    kw[key] = kind(kw[key])
            if "strategy" in kw:
                kw["strategy"] = Strategy(**{**kw["strategy"], "name": StrategyName(kw["strategy"]["name"])})
            if "masking" in kw:
                kw["masking"] = MaskingConfig(**kw["masking"])
            if kw.get("privacy") is not None:
                kw["privacy"] = PrivacySettings(**kw["privacy"])
            return cls(**kw)
        except (TypeError, ValueError, KeyError, SecAggError) as err:
            raise ConfigError(f"bad run configuration: {err}") from None
