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

import enum
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from dp.errors import InvalidPrivacyParameter

GaussianTerm = tuple[float, float, int]  # (noise multiplier z, sampling rate q, count)


class Unit(enum.Enum):
    """Whose privacy an event protects: one training example, or one client's whole contribution."""

    EXAMPLE = "example"
    CLIENT = "client"


class Neighbouring(enum.Enum):
    """The neighbour relation an event's accounting holds for.

    ``ADD_REMOVE``: the datasets differ by one unit present in one and absent in the other (Poisson sampling;
    the amplification by sampling of Mironov, Talwar, Zhang 2019 is for this relation).
    ``REPLACE_WITH_ZERO``: the datasets differ by one client's update being replaced by zero (the client still
    takes part, contributing nothing): with a fixed number of clients per round, the sum moves by at most the
    clip C, so a Gaussian of z C costs z with no sampling amplification. Under arbitrary replacement (one
    client's data swapped for another's) the sum may move by 2 C: the same run costs what z / 2 costs.
    """

    ADD_REMOVE = "add/remove"
    REPLACE_WITH_ZERO = "replace-with-zero"


@dataclass(frozen=True)
class PrivacyEvent:
    """Base of every privacy event: its ``unit`` and ``relation`` say what its accounting protects (client-level
    events by default, with the relation that fixed-size client sampling and no amplification hold for)."""

    unit: Unit = field(default=Unit.CLIENT, kw_only=True)
    relation: Neighbouring = field(default=Neighbouring.REPLACE_WITH_ZERO, kw_only=True)
    rdp_bound_only: ClassVar[bool] = False

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: the event's type and fields (nested events described too)."""
        out: dict[str, Any] = {"type": type(self).__name__}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.value if isinstance(value, enum.Enum) else value
        return out

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
    (Mironov, Talwar, Zhang 2019), add/remove neighbours. Amplification applies only when sampling really is
    Poisson. DP-SGD's examples by default; clients under Poisson client sampling with ``unit=Unit.CLIENT``."""

    noise_multiplier: float
    sampling_rate: float
    count: int = 1
    unit: Unit = field(default=Unit.EXAMPLE, kw_only=True)
    relation: Neighbouring = field(default=Neighbouring.ADD_REMOVE, kw_only=True)

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

    def __post_init__(self) -> None:
        kinds = {(e.unit, e.relation) for e in self.events}
        if len(kinds) > 1:
            raise InvalidPrivacyParameter(f"cannot compose events of different units or relations: {kinds}")
        if kinds:
            (unit, relation), = kinds
            object.__setattr__(self, "unit", unit)
            object.__setattr__(self, "relation", relation)

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
        values = dict(data)
        cls = _TYPES[values.pop("type")]
        if cls is ComposedEvent:
            return ComposedEvent(tuple(event_from_dict(e) for e in values["events"]))
        if "unit" in values:  # ledgers before version 4 state neither: each class's default is what they meant
            values["unit"] = Unit(values["unit"])
        if "relation" in values:
            values["relation"] = Neighbouring(values["relation"])
        return cls(**values)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InvalidPrivacyParameter(f"not a privacy event: {data!r} ({err})") from None

