"""Client-level DP around any aggregator (DP-FedAvg, McMahan et al. 2018): clip, noise, then secure sum.

``CENTRAL``: clients clip their update to L2 norm C; the server adds N(0, (z C)^2) to the sum of the clipped
updates after aggregation (it is trusted to do so). ``DISTRIBUTED``: each client adds its share
N(0, (z C)^2 / m), m = min_clients, before its update is encrypted, so the decrypted sum carries at least
the target noise whenever m clients survive, and the server never sees an unnoised sum. Continuous Gaussian
shares need an aggregator that sums reals exactly enough (CKKS); pairwise masking would need discrete
Gaussian or Skellam noise on the ring and is refused here.

Updates are weighted uniformly (weight 1): example-count weights would change each client's sensitivity.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

import numpy as np

from dp.errors import InvalidPrivacyParameter
from dp.events import DistributedGaussianEvent, GaussianEvent
from secagg.aggregation import AggregateResult, Aggregator, ClientSession, RoundContext, ServerSession
from secagg.primitives.prg import secure_gaussian


class ClientLevelMode(enum.Enum):
    CENTRAL = "central"
    DISTRIBUTED = "distributed"


@dataclass(frozen=True)
class ClientLevelDP:
    noise_multiplier: float
    clip: float
    mode: ClientLevelMode = ClientLevelMode.CENTRAL
    min_clients: int = 2

    def __post_init__(self) -> None:
        GaussianEvent(self.noise_multiplier)
        if not self.clip > 0:
            raise InvalidPrivacyParameter(f"clip must be positive, got {self.clip}")
        if self.min_clients < 1:
            raise InvalidPrivacyParameter(f"min_clients must be positive, got {self.min_clients}")


def clip_l2(update: np.ndarray, bound: float) -> np.ndarray:
    norm = float(np.linalg.norm(update.astype(np.float64)))
    return update if norm <= bound else (update * (bound / norm)).astype(update.dtype)


class ClientLevelDPAggregator:
    """Wraps ``inner``: clip (and, distributed, noise) on the client side; noise (central) and privacy
    events on the server side. The inner aggregator is unaware of DP."""

    def __init__(self, inner: Aggregator, dp: ClientLevelDP) -> None:
        self.inner, self.dp = inner, dp

    @property
    def stages(self) -> int:
        return self.inner.stages

    def client_session(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> ClientSession:
        clipped = clip_l2(np.asarray(update, dtype=np.float32), self.dp.clip).astype(np.float64)
        if self.dp.mode is ClientLevelMode.DISTRIBUTED:
            sigma = self.dp.noise_multiplier * self.dp.clip / np.sqrt(self.dp.min_clients)
            clipped += secure_gaussian(clipped.size, sigma)
        return self.inner.client_session(ctx, client_id, clipped.astype(np.float32), 1.0)

    def server_session(self, ctx: RoundContext) -> ServerSession:
        return _DPServer(self.inner.server_session(ctx), self.dp)


class _DPServer:
    def __init__(self, inner: ServerSession, dp: ClientLevelDP) -> None:
        self.inner, self.dp = inner, dp

    @property
    def finished(self) -> bool:
        return self.inner.finished

    def collect(self, sender: int, message: bytes) -> None:
        self.inner.collect(sender, message)

    def close_stage(self) -> dict[int, bytes]:
        return self.inner.close_stage()

    def result(self) -> AggregateResult:
        result = self.inner.result()
        k = len(result.contributors)
        if self.dp.mode is ClientLevelMode.CENTRAL:
            noise = secure_gaussian(result.mean.size, self.dp.noise_multiplier * self.dp.clip) / k
            mean = (result.mean.astype(np.float64) + noise).astype(np.float32)
            event: GaussianEvent | DistributedGaussianEvent = GaussianEvent(self.dp.noise_multiplier)
        else:
            mean = result.mean
            event = DistributedGaussianEvent(self.dp.noise_multiplier, k, self.dp.min_clients)
        return replace(result, mean=mean, events=result.events + (event,))
