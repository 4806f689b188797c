"""Client-level DP around any aggregator (DP-FedAvg, McMahan et al. 2018): clip, noise, then secure sum.

``CENTRAL``: clients clip their update to L2 norm C; the server adds N(0, (z C)^2) to the sum of the clipped
updates after aggregation (it is trusted to do so); under masking, C becomes the norm a client's fixed-point
encoding can reach, ``C + sqrt(d) / scale`` (rounding moves each coordinate by less than one step). ``DISTRIBUTED``: each client adds its share of the
noise before its update is hidden, so the recovered sum carries at least the target noise whenever
m = min_clients survive, and the server never sees an unnoised sum:

- under CKKS (or any aggregator of reals), the share is continuous N(0, (z C)^2 / m); CKKS clips every
  coordinate to its encoding range, so its clients add the share after that clip (``CKKSParams.noise_sigma``,
  checked here), and nothing ever clips the noise;
- under pairwise masking, which sums integers in a ring, the share is discrete Gaussian N_Z(0, s^2) added
  to the fixed-point encoding (Kairouz, Liu, Steinke 2021), ``s = z D / sqrt(m)`` where D bounds the L2
  norm of one client's encoding in ring units (``scale * C`` plus the rounding, see
  :meth:`~secagg.encoding.FixedPointEncoder.l2_sensitivity`), and the round emits a
  :class:`~dp.events.DistributedDiscreteGaussianEvent`.

In distributed mode the sessions' ``min_clients`` is raised to m: honest clients refuse to take part in a
release with fewer than m contributions (masking clients check the survivor list before unmasking; the
CKKS key holder has its own floor). Events count the survivors actually summed, never more.

Updates are weighted uniformly (weight 1): example-count weights would change each client's sensitivity.
With ``adaptive`` (central mode), the clip norm moves toward a quantile of the update norms after every round
(:mod:`dp.adaptive`); each client's "within the clip" bit rides along as one more summed coordinate.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace

import numpy as np

from dp.adaptive import AdaptiveClipping
from dp.errors import InvalidPrivacyParameter
from dp.events import (DistributedDiscreteGaussianEvent, DistributedGaussianEvent, GaussianEvent, Neighbouring,
                       PoissonSampledGaussianEvent, PrivacyEvent, Unit)
from secagg.aggregation import AggregateResult, Aggregator, ClientSession, RoundContext, ServerSession
from secagg.encoding import FixedPointEncoder
from secagg.masking import MaskingAggregator
from secagg.primitives.noise import discrete_gaussian, secure_gaussian


class ClientLevelMode(enum.Enum):
    CENTRAL = "central"
    DISTRIBUTED = "distributed"


@dataclass(frozen=True)
class ClientLevelDP:
    noise_multiplier: float
    clip: float
    mode: ClientLevelMode = ClientLevelMode.CENTRAL
    min_clients: int = 2
    adaptive: AdaptiveClipping | None = None
    sampling_rate: float | None = None
    expected_clients: float | None = None
    secure_mode: bool = False

    def __post_init__(self) -> None:
        GaussianEvent(self.noise_multiplier)
        if not self.clip > 0:
            raise InvalidPrivacyParameter(f"clip must be positive, got {self.clip}")
        if self.min_clients < 1:
            raise InvalidPrivacyParameter(f"min_clients must be positive, got {self.min_clients}")
        if (self.sampling_rate is None) != (self.expected_clients is None):
            raise InvalidPrivacyParameter("Poisson client sampling needs both sampling_rate and expected_clients")
        if self.sampling_rate is not None:
            assert self.expected_clients is not None
            if not 0 < self.sampling_rate <= 1 or not self.expected_clients > 0:
                raise InvalidPrivacyParameter(f"sampling rate {self.sampling_rate} outside (0, 1] or expected "
                                              f"clients {self.expected_clients} not positive")
            if self.mode is not ClientLevelMode.CENTRAL or self.adaptive is not None:
                raise InvalidPrivacyParameter(
                    "Poisson client sampling is accounted for central DP without adaptive clipping only: under "
                    "add/remove neighbours a distributed round's noise shares change with the participants")
        if self.adaptive is not None:
            if self.mode is not ClientLevelMode.CENTRAL:
                raise InvalidPrivacyParameter("adaptive clipping is implemented for central DP only: distributed "
                                              "noise shares would also have to cover the clients' count")
            self.adaptive.update_noise_multiplier(self.noise_multiplier)


def clip_l2(update: np.ndarray, bound: float) -> np.ndarray:
    norm = float(np.linalg.norm(update.astype(np.float64)))
    return update if norm <= bound else (update * (bound / norm)).astype(update.dtype)


class ClientLevelDPAggregator:
    """Wraps ``inner``: clip (and, distributed, noise) on the client side; noise (central) and privacy
    events on the server side. The inner aggregator is unaware of DP, except that a masking aggregator is
    asked for clients that add discrete Gaussian noise to their encodings. ``clip`` is the current clip
    norm: ``dp.clip``, or, with adaptive clipping, where the last round moved it."""

    def __init__(self, inner: Aggregator, dp: ClientLevelDP) -> None:
        self.inner, self.dp = inner, dp
        self.clip = dp.clip
        self._inner_noises = False
        share = getattr(getattr(inner, "params", None), "noise_sigma", None)
        if dp.mode is ClientLevelMode.DISTRIBUTED and share is not None:
            # an aggregator that clips every coordinate (CKKS) must add the share itself, after its clip
            expected = dp.noise_multiplier * dp.clip / math.sqrt(dp.min_clients)
            if not math.isclose(share, expected, rel_tol=1e-9):
                raise InvalidPrivacyParameter(
                    f"{type(inner).__name__} clips each coordinate, so it must add the noise share itself, after "
                    f"its clip: make it with noise_sigma = z C / sqrt(m) = {expected:.6g}, not {share:.6g}")
            self._inner_noises = True

    @property
    def stages(self) -> int:
        return self.inner.stages

    def client_session(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> ClientSession:
        ctx = self._inner_context(ctx)
        inner, ring = self._for_round(ctx)
        update = np.asarray(update, dtype=np.float32)
        clipped = clip_l2(update, self.clip).astype(np.float64)
        if self.dp.mode is ClientLevelMode.DISTRIBUTED and ring is None and not self._inner_noises:
            sigma = self.dp.noise_multiplier * self.clip / np.sqrt(self.dp.min_clients)
            clipped += secure_gaussian(clipped.size, sigma)
        if self.dp.adaptive is not None:  # the bit b - 1/2: was the update within the clip?
            within = float(np.linalg.norm(update.astype(np.float64))) <= self.clip
            clipped = np.append(clipped, 0.5 if within else -0.5)
        return inner.client_session(ctx, client_id, clipped.astype(np.float32), 1.0)

    def resume_client_session(self, ctx: RoundContext, client_id: int, state: bytes) -> ClientSession:
        """The inner session :meth:`client_session` opened, suspended by the client between stages."""
        ctx = self._inner_context(ctx)
        inner, _ = self._for_round(ctx)
        return inner.resume_client_session(ctx, client_id, state)  # type: ignore[attr-defined]

    def round_settings(self) -> dict[str, float]:
        """What clients in other processes need this round beyond the model: the clip, when it adapts."""
        return {"clip": self.clip} if self.dp.adaptive is not None else {}

    def apply_round_settings(self, settings: dict[str, float]) -> None:
        """A client's side of :meth:`round_settings`: the server's clip for this round (central DP trusts the
        server with the noise anyway). A clip where it does not adapt is refused (:class:`InvalidPrivacyParameter`):
        under distributed DP the noise shares are sized for the configured clip."""
        unknown = set(settings) - {"clip"}
        if unknown:
            raise InvalidPrivacyParameter(f"unknown round settings {sorted(unknown)}")
        if "clip" not in settings:
            return
        clip = settings["clip"]
        if self.dp.adaptive is None:
            raise InvalidPrivacyParameter("a round clip was sent, but this run's clip does not adapt")
        try:  # an int too large for a float (JSON has no size limit) raises OverflowError here
            valid = not isinstance(clip, bool) and isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0
        except OverflowError:
            valid = False
        if not valid:
            raise InvalidPrivacyParameter(f"a round clip that is not a positive finite number: {str(clip)[:40]}")
        self.clip = float(clip)

    def noise_only(self, dimension: int) -> AggregateResult:
        """Poisson client sampling: the release of a round with no contribution (no client drawn, or none
        survived): the noise alone over the fixed denominator, so that whether a round had contributions never
        shows, and the same event as any other round."""
        if self.dp.sampling_rate is None or self.dp.expected_clients is None:
            raise InvalidPrivacyParameter("a noise-only release is for Poisson client sampling")
        noise = noised_sum(np.zeros(dimension), self.dp.noise_multiplier, self.clip, self.dp.secure_mode)
        event = PoissonSampledGaussianEvent(self.dp.noise_multiplier, self.dp.sampling_rate, unit=Unit.CLIENT,
                                            relation=Neighbouring.ADD_REMOVE)
        return AggregateResult((noise / self.dp.expected_clients).astype(np.float32), 0.0, (), (event,))

    def server_session(self, ctx: RoundContext) -> ServerSession:
        ctx = self._inner_context(ctx)
        inner, ring = self._for_round(ctx)
        return _DPServer(inner.server_session(ctx), self, ring, self._central_sensitivity(ctx))

    def _central_sensitivity(self, ctx: RoundContext) -> float:
        """The L2 sensitivity the central noise must cover: the clip, or, under masking, the norm one client's
        fixed-point encoding can reach (the clip plus its rounding, :meth:`FixedPointEncoder.l2_sensitivity`)."""
        if self.dp.mode is ClientLevelMode.CENTRAL and isinstance(self.inner, MaskingAggregator):
            encoder = self.inner.encoder(ctx)
            return encoder.l2_sensitivity(self.clip) / encoder.scale
        return self.clip

    def _inner_context(self, ctx: RoundContext) -> RoundContext:
        """Distributed: at least ``min_clients`` contributions. Adaptive: one more coordinate, the bit."""
        if self.dp.mode is ClientLevelMode.DISTRIBUTED and ctx.min_clients < self.dp.min_clients:
            ctx = replace(ctx, min_clients=self.dp.min_clients)
        if self.dp.adaptive is not None:
            ctx = replace(ctx, dimension=ctx.dimension + 1)
        return ctx

    def _for_round(self, ctx: RoundContext) -> tuple[Aggregator, FixedPointEncoder | None]:
        """The inner aggregator of this round and, when the noise goes on a masking ring, its encoder."""
        if self.dp.mode is not ClientLevelMode.DISTRIBUTED or not isinstance(self.inner, MaskingAggregator):
            return self.inner, None
        sensitivity = self.inner.encoder(ctx).l2_sensitivity(self.clip)
        noisy = self.inner.with_noise(self.dp.noise_multiplier * sensitivity / math.sqrt(self.dp.min_clients))
        return noisy, noisy.encoder(ctx)


class _DPServer:
    def __init__(self, inner: ServerSession, owner: ClientLevelDPAggregator, ring: FixedPointEncoder | None,
                 sensitivity: float) -> None:
        self.inner, self.owner, self.ring, self.sensitivity = inner, owner, ring, sensitivity
        self.dp, self.clip = owner.dp, owner.clip  # the clip this round's clients use

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def collect(self, sender: int, message: bytes) -> None:
        self.inner.collect(sender, message)

    def close_stage(self) -> dict[int, bytes]:
        return self.inner.close_stage()

    def result(self) -> AggregateResult:
        result = self.inner.result()
        k, z = len(result.contributors), self.dp.noise_multiplier
        mean = result.mean
        event: PrivacyEvent
        if self.dp.mode is ClientLevelMode.CENTRAL:
            total = result.mean.astype(np.float64) * k  # weights are 1: the sum of the clipped updates
            if self.dp.adaptive is not None:
                total, count = total[:-1], total[-1] + k / 2.0
                count += secure_gaussian(1, self.dp.adaptive.count_noise)[0]
                z_update = self.dp.adaptive.update_noise_multiplier(z)
                self.owner.clip = self.dp.adaptive.next_clip(self.clip, count / k)
            else:
                z_update = z
            noised = noised_sum(total, z_update, self.sensitivity, self.dp.secure_mode)
            if self.dp.sampling_rate is not None:  # a fixed denominator: the count itself would leak
                assert self.dp.expected_clients is not None
                mean = (noised / self.dp.expected_clients).astype(np.float32)
                event = PoissonSampledGaussianEvent(z, self.dp.sampling_rate, unit=Unit.CLIENT,
                                                    relation=Neighbouring.ADD_REMOVE)
            else:
                mean = (noised / k).astype(np.float32)
                event = GaussianEvent(z)
        elif self.ring is not None:
            event = DistributedDiscreteGaussianEvent(z, k, self.dp.min_clients, self.ring.noise_sigma,
                                                     self.ring.l2_sensitivity(self.clip), self.ring.dimension)
        else:
            event = DistributedGaussianEvent(z, k, self.dp.min_clients)
        return replace(result, mean=mean, events=result.events + (event,))


SNAP_BITS = 20  # secure mode's grid: a power of two near the noise's standard deviation / 2^20


def noised_sum(total: np.ndarray, noise_multiplier: float, sensitivity: float, secure_mode: bool) -> np.ndarray:
    """``total`` plus N(0, (z sensitivity)^2) per coordinate, from a CSPRNG.

    ``secure_mode``: floating-point attacks on sampled noise (Mironov 2012; Jin et al. 2022) read the secret in
    the low bits of ``total + noise``. Instead the sum is snapped to a grid g (a power of two near
    z sensitivity / 2^20) and a discrete Gaussian is added, drawn exactly with integers (Canonne, Kamath,
    Steinke 2020): the release is an exact multiple of g, whatever the sum's bits. Snapping moves a
    neighbour's sum by at most g sqrt(d) more, so the noise covers the sensitivity plus that, and the discrete
    Gaussian's RDP bound is the continuous one's for GaussianEvent(z)."""
    sigma = noise_multiplier * sensitivity
    if not secure_mode:
        return total + secure_gaussian(total.size, sigma)
    grid = 2.0 ** math.floor(math.log2(sigma) - SNAP_BITS)
    widened = noise_multiplier * (sensitivity + grid * math.sqrt(total.size))
    steps = np.round(total / grid).astype(np.int64) + discrete_gaussian(total.size, widened / grid)
    return steps.astype(np.float64) * grid
