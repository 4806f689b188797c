"""What a user chooses: a protection mode and a differential-privacy mode, as typed, serializable settings.

``secure=``: :class:`Masking` (pairwise masks, SecAgg / SecAgg+), :class:`CKKS` (homomorphic encryption with
a separate key holder) or ``None`` (plaintext). ``dp=``: :class:`DPSGD` (example-level, Opacus in every
client), :class:`CentralDP` (client-level, the server noises the aggregate), :class:`DistributedDP`
(client-level, every client adds a share of the noise under secure aggregation) or ``None``.

Nothing here depends on the clients: what does (weight bounds, the ring, thresholds, the noise multiplier
that reaches a target epsilon) is derived from the registered clients by :mod:`federation.protection`.
Every setting serializes with :func:`to_dict` and comes back with :func:`from_dict` (what a Flower job
carries and what ``--resume`` compares).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Union

from federation.errors import ConfigError
from federation.strategy import Strategy

@dataclass(frozen=True)
class Masking:
    """Pairwise-masking secure aggregation (Bonawitz et al. 2017); SecAgg+ with ``neighbors`` (default about
    2 log2 n; 0 = complete graph). ``threshold``: Shamir threshold, a count above half the neighbours or a
    fraction in [0.5, 1]. ``consistency_check``: secure against a server that deviates from the protocol.
    ``clip``: each update coordinate is clipped to [-clip, clip] before fixed-point encoding with
    ``precision_bits`` bits. See :class:`secagg.masking.MaskingConfig`."""

    neighbors: int | None = None
    threshold: int | float = 0.5
    consistency_check: bool = False
    clip: float = 1.0
    precision_bits: int = 20
    quorum: float = 0.5

    def __post_init__(self) -> None:
        from secagg.errors import ConfigurationError
        from secagg.masking import MaskingConfig

        try:
            MaskingConfig(**dataclasses.asdict(self))
        except ConfigurationError as err:
            raise ConfigError(f"Masking: {err}") from None


@dataclass(frozen=True)
class CKKS:
    """CKKS homomorphic encryption through TenSEAL; the server holds no secret key, a key holder decrypts only
    aggregates of at least ``min_clients`` (of the federation, at least 2) signed contributions. ``clip``:
    each update coordinate is clipped to [-clip, clip] before encryption."""

    clip: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"CKKS: clip must be finite and positive, got {self.clip}")


@dataclass(frozen=True)
class _Budget:
    """Exactly one of ``noise_multiplier`` (z) and ``target_epsilon`` (then z is the smallest one that keeps the
    whole run within it at ``delta``, RDP); ``max_epsilon``: a budget, checked before every round."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    max_epsilon: float | None = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ConfigError(f"{name}: give exactly one of noise_multiplier and target_epsilon")
        for setting in ("noise_multiplier", "target_epsilon", "max_epsilon"):
            value = getattr(self, setting)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: {setting} must be positive, got {value}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"{name}: delta must be in (0, 1), got {self.delta}")
        if not self._clip > 0:
            raise ConfigError(f"{name}: the clip norm must be positive, got {self._clip}")

    @property
    def _clip(self) -> float:
        return 1.0


@dataclass(frozen=True)
class DPSGD(_Budget):
    """Example-level DP-SGD in every client through Opacus (as ``make_private``): per-sample gradients clipped
    to ``max_grad_norm``, Gaussian noise z * max_grad_norm, Poisson-sampled batches. ``secure_mode``: Opacus's
    defence against floating-point attacks on the noise."""

    max_grad_norm: float = 1.0
    secure_mode: bool = False

    @property
    def _clip(self) -> float:
        return self.max_grad_norm


@dataclass(frozen=True)
class CentralDP(_Budget):
    """Client-level DP by a trusted server: each update clipped to L2 norm ``clip``, Gaussian noise z * clip on
    the sum. ``adaptive_quantile``: adapt the clip (starting from ``clip``) toward that quantile of the update
    norms (Andrew et al. 2021) with geometric rate ``clip_learning_rate`` and ``count_noise`` on the count
    (default max(z, clients per round / 20)). ``secure_mode``: the noise is a discrete Gaussian on a grid,
    immune to floating-point attacks (:func:`dp.clipping.noised_sum`)."""

    clip: float = 1.0
    adaptive_quantile: float | None = None
    clip_learning_rate: float = 0.2
    count_noise: float | None = None
    secure_mode: bool = False

    @property
    def _clip(self) -> float:
        return self.clip

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adaptive_quantile is not None:
            from dp.adaptive import AdaptiveClipping
            from dp.errors import InvalidPrivacyParameter

            try:
                AdaptiveClipping(self.adaptive_quantile, 1.0 if self.count_noise is None else self.count_noise, self.clip_learning_rate)
            except InvalidPrivacyParameter as err:
                raise ConfigError(f"CentralDP: {err}") from None


@dataclass(frozen=True)
class DistributedDP(_Budget):
    """Client-level DP without trusting the server: each update clipped to L2 norm ``clip``, and every client
    adds a share of the noise (discrete Gaussian in the ring under :class:`Masking`, Gaussian under
    :class:`CKKS`) so that the aggregate of at least ``min_clients`` carries N(0, (z * clip)^2). Needs
    ``secure=``: without secure aggregation the server would see each noised update."""

    clip: float = 1.0

    @property
    def _clip(self) -> float:
        return self.clip


class ClientSampling(enum.Enum):
    """How a round's clients are drawn. ``FIXED_SIZE``: exactly ``clients_per_round`` without replacement
    (utility: every round has the same size; client-level DP is then accounted without amplification, for
    replace-with-zero neighbours). ``POISSON``: each client joins independently with probability
    q = clients_per_round / clients, from a CSPRNG (client-level DP is then amplified by sampling, for
    add/remove neighbours, and every eligible client is charged every round; see docs/privacy-audit.md)."""

    FIXED_SIZE = "fixed-size"
    POISSON = "poisson"


Protection = Union[Masking, CKKS, None]
Privacy = Union[DPSGD, CentralDP, DistributedDP, None]
_KINDS: dict[str, type] = {"masking": Masking, "ckks": CKKS, "dpsgd": DPSGD, "central": CentralDP,
                           "distributed": DistributedDP}


def to_dict(setting: Masking | CKKS | DPSGD | CentralDP | DistributedDP | None) -> dict[str, Any] | None:
    """JSON-ready ``{"kind": ..., field: value, ...}``; ``None`` stays ``None``."""
    if setting is None:
        return None
    kind = next(k for k, cls in _KINDS.items() if type(setting) is cls)
    return {"kind": kind, **dataclasses.asdict(setting)}


def from_dict(d: dict[str, Any] | None) -> Any:
    """The setting :func:`to_dict` wrote; unknown kinds or fields are a :class:`ConfigError`."""
    if d is None:
        return None
    if not isinstance(d, dict) or d.get("kind") not in _KINDS:
        raise ConfigError(f"not a protection or privacy setting: {d!r}")
    cls = _KINDS[d["kind"]]
    fields = {f.name for f in dataclasses.fields(cls)}
    extra = set(d) - fields - {"kind"}
    if extra:
        raise ConfigError(f"{cls.__name__}: unknown settings {sorted(extra)}")
    return cls(**{k: v for k, v in d.items() if k != "kind"})


@dataclass(frozen=True)
class FederationConfig:
    """Round-loop settings. ``clients_per_round``: an int (a number), a float in (0, 1] (a fraction) or None (all)."""

    rounds: int = 10
    clients_per_round: int | float | None = None
    local_epochs: int = 1
    strategy: Strategy = field(default_factory=Strategy)
    dropout: float = 0.0
    min_clients: int = 1
    seed: int = 0
    client_sampling: ClientSampling = ClientSampling.FIXED_SIZE

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, got {self.rounds}")
        if self.local_epochs < 1:
            raise ConfigError(f"local epochs must be at least 1, got {self.local_epochs}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.min_clients < 1:
            raise ConfigError(f"min_clients must be at least 1, got {self.min_clients}")
        cpr = self.clients_per_round
        if isinstance(cpr, float) and not 0.0 < cpr <= 1.0:
            raise ConfigError(f"a fraction of clients per round must be in (0, 1], got {cpr}")
        if isinstance(cpr, int) and cpr < 1:
            raise ConfigError(f"clients per round must be at least 1, got {cpr}")

    def sample_size(self, num_clients: int) -> int:
        cpr = self.clients_per_round
        if cpr is None:
            return num_clients
        if isinstance(cpr, float):
            return max(1, math.ceil(cpr * num_clients))
        if cpr > num_clients:
            raise ConfigError(f"{cpr} clients per round but only {num_clients} clients")
        return cpr

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["strategy"] = {**asdict(self.strategy), "name": self.strategy.name.value}
        d["client_sampling"] = self.client_sampling.value
        return d

    def sampling_rate(self, num_clients: int) -> float | None:
        """q of Poisson client sampling (None for fixed-size sampling)."""
        if self.client_sampling is ClientSampling.FIXED_SIZE:
            return None
        return self.sample_size(num_clients) / num_clients
