"""Privacy events: immutable records of what a round released, consumed by accountants.

Producers (DP-SGD in a client, client-level noise around an aggregator) emit events; the ledger stores
them per client and for the population; accountants turn them into (epsilon, delta). Every event reduces to
terms ``(noise_multiplier, sampling_rate, count)`` of the Poisson-subsampled Gaussian mechanism, which both
the RDP and the PRV accountant handle. An event whose mechanism is not Gaussian but whose Renyi DP is
bounded by a Gaussian's (the distributed discrete Gaussian) reduces to that Gaussian's terms and says so
with ``rdp_bound_only``: its terms are exact for RDP accounting and only an RDP bound for the PRV
accountant, which then reports the RDP epsilon rather than claim a tighter one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from dp.errors import InvalidPrivacyParameter

GaussianTerm = tuple[float, float, int]  # (noise multiplier z, sampling rate q, count)


@dataclass(frozen=True)
class PrivacyEvent:
    """Base of every privacy event."""

    rdp_bound_only: ClassVar[bool] = False

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: the event's type and fields (nested events described too)."""
        return {"type": type(self).__name__, **asdict(self)}

    def terms(self) -> list[GaussianTerm]:
        raise NotImplementedError


@dataclass(frozen=True)
class GaussianEvent(PrivacyEvent):
    """The Gaussian mechanism: sensitivity-1 query plus N(0, z^2). RDP(alpha) = alpha / (2 z^2)."""

    noise_multiplier: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise InvalidPrivacyParameter(f"noise multiplier must be positive, got {self.noise_multiplier}")

    def terms(self) -> list[GaussianTerm]:
        return [(self.noise_multiplier, 1.0, 1)]


@dataclass(frozen=True)
class PoissonSampledGaussianEvent(PrivacyEvent):
    """The Gaussian mechanism on a Poisson sample: each record is included independently with probability q
    (Mironov, Talwar, Zhang 2019). Amplification applies only when sampling really is Poisson."""

    noise_multiplier: float
    sampling_rate: float
    count: int = 1

    def __post_init__(self) -> None:
        GaussianEvent(self.noise_multiplier)
        if not 0.0 < self.sampling_rate <= 1.0:
            raise InvalidPrivacyParameter(f"sampling rate must be in (0, 1], got {self.sampling_rate}")
        if self.count < 1:
            raise InvalidPrivacyParameter(f"count must be at least 1, got {self.count}")

    def terms(self) -> list[GaussianTerm]:
        return [(self.noise_multiplier, self.sampling_rate, self.count)]


@dataclass(frozen=True)
class DistributedGaussianEvent(PrivacyEvent):
    """Client-level noise added by the clients themselves: each of ``survivors`` added N(0, (z C)^2 / m)
    for ``m = min_clients``, so the released sum carries N(0, (z C)^2 * survivors / m). The effective noise
    multiplier is z * sqrt(survivors / m): dropouts below m would reduce it, and are accounted as they are."""

    noise_multiplier: float
    survivors: int
    min_clients: int

    def __post_init__(self) -> None:
        GaussianEvent(self.noise_multiplier)
        if self.survivors < 1 or self.min_clients < 1:
            raise InvalidPrivacyParameter("survivors and min_clients must be positive")

    @property
    def effective_noise_multiplier(self) -> float:
        return self.noise_multiplier * math.sqrt(self.survivors / self.min_clients)

    def terms(self) -> list[GaussianTerm]:
        return [(self.effective_noise_multiplier, 1.0, 1)]


@dataclass(frozen=True)
class DistributedDiscreteGaussianEvent(PrivacyEvent):
    """The distributed discrete Gaussian (Kairouz, Liu, Steinke, ICML 2021): each of ``survivors`` clients
    added N_Z(0, sigma^2) to every one of ``dimension`` integer coordinates, and one client's integer
    contribution has L2 norm at most ``sensitivity`` (both in ring units). ``noise_multiplier`` is the
    target z, met when ``min_clients`` survive.

    A sum of discrete Gaussians is not a discrete Gaussian; Proposition 14 of the paper bounds its Renyi DP
    by ``alpha * rho`` with ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1))`` and
    ``rho = min(D2^2/(n s^2) + 2 D1 tau/(sqrt(n) s) + tau^2 d, (D2/(sqrt(n) s) + tau sqrt(d))^2) / 2``,
    ``s = sigma``, ``n = survivors``, ``D1 <= min(sqrt(d) D2, D2^2)`` for an integer vector. That is the RDP of
    a Gaussian of noise multiplier ``1 / sqrt(2 rho)``; tau vanishes at the sigmas used (thousands)."""

    noise_multiplier: float
    survivors: int
    min_clients: int
    sigma: float
    sensitivity: float
    dimension: int

    rdp_bound_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        DistributedGaussianEvent(self.noise_multiplier, self.survivors, self.min_clients)
        if not (math.isfinite(self.sigma) and self.sigma >= 0.5):
            raise InvalidPrivacyParameter(f"the bound needs sigma >= 1/2, got {self.sigma}")
        if not (math.isfinite(self.sensitivity) and self.sensitivity > 0) or self.dimension < 1:
            raise InvalidPrivacyParameter("sensitivity and dimension must be positive")

    @property
    def rho(self) -> float:
        n, s, d, l2 = self.survivors, self.sigma, self.dimension, self.sensitivity
        l1 = min(math.sqrt(d) * l2, l2 * l2)
        tau = 10.0 * math.fsum(math.exp(-2.0 * math.pi**2 * s * s * k / (k + 1)) for k in range(1, n))
        spread = math.sqrt(n) * s
        return 0.5 * min(l2**2 / spread**2 + 2.0 * l1 * tau / spread + tau**2 * d,
                         (l2 / spread + tau * math.sqrt(d)) ** 2)

    @property
    def effective_noise_multiplier(self) -> float:
        return 1.0 / math.sqrt(2.0 * self.rho)

    def terms(self) -> list[GaussianTerm]:
        return [(self.effective_noise_multiplier, 1.0, 1)]


@dataclass(frozen=True)
class ComposedEvent(PrivacyEvent):
    """Sequential composition of events."""

    events: tuple[PrivacyEvent, ...]

    @property  # type: ignore[override]
    def rdp_bound_only(self) -> bool:
        return any(e.rdp_bound_only for e in self.events)

    def describe(self) -> dict[str, Any]:
        return {"type": "ComposedEvent", "events": [e.describe() for e in self.events]}

    def terms(self) -> list[GaussianTerm]:
        return [t for e in self.events for t in e.terms()]


_TYPES = {cls.__name__: cls for cls in (GaussianEvent, PoissonSampledGaussianEvent, DistributedGaussianEvent,
                                        DistributedDiscreteGaussianEvent, ComposedEvent)}


def event_from_dict(data: dict[str, Any]) -> PrivacyEvent:
    """The inverse of :meth:`PrivacyEvent.describe`; raises :class:`InvalidPrivacyParameter` on bad input."""
    try:
        fields = dict(data)
        cls = _TYPES[fields.pop("type")]
        if cls is ComposedEvent:
            return ComposedEvent(tuple(event_from_dict(e) for e in fields["events"]))
        return cls(**fields)
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidPrivacyParameter(f"not a privacy event: {data!r} ({err})") from None

