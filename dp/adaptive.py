"""Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021): the clip norm follows a quantile.

Each round every client reports, next to its clipped update, whether its update norm was within the current
clip C_t (the bit b, sent as ``b - 1/2``, sensitivity 1/2). The server adds N(0, sigma_b^2) to the count,
estimates the fraction ``b_bar`` of clients under the clip, and moves the clip geometrically toward the
target quantile gamma::

    C_(t+1) = C_t * exp(-eta * (b_bar - gamma))

The count costs privacy: releasing it with N(0, sigma_b^2) and the update sum with N(0, (z_u C_t)^2) is one
Gaussian mechanism of noise multiplier z when ``z_u = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` (the paper's
Theorem 1), so the run is accounted with the user's z as before and the update carries a little more noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dp.errors import InvalidPrivacyParameter


@dataclass(frozen=True)
class AdaptiveClipping:
    """``quantile``: the target fraction gamma of updates within the clip; ``learning_rate``: eta;
    ``count_noise``: sigma_b, the standard deviation of the noise on the count (the paper suggests the
    expected number of clients per round / 20; it must exceed z / 2)."""

    quantile: float = 0.5
    count_noise: float = 1.0
    learning_rate: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.quantile < 1:
            raise InvalidPrivacyParameter(f"the target quantile must be in (0, 1), got {self.quantile}")
        if not (math.isfinite(self.count_noise) and self.count_noise > 0):
            raise InvalidPrivacyParameter(f"the count noise must be positive, got {self.count_noise}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise InvalidPrivacyParameter(f"the clip learning rate must be positive, got {self.learning_rate}")

    def update_noise_multiplier(self, noise_multiplier: float) -> float:
        """z_u, the multiplier left for the update sum when the whole release is to cost ``noise_multiplier``."""
        rest = noise_multiplier**-2 - (2.0 * self.count_noise) ** -2
        if not rest > 0:
            raise InvalidPrivacyParameter(
                f"the count noise {self.count_noise} leaves no budget for the update at z = {noise_multiplier}: "
                f"it must exceed z / 2 = {noise_multiplier / 2}")
        return rest**-0.5

    def next_clip(self, clip: float, fraction_within: float) -> float:
        """C_(t+1) from C_t and the noisy fraction of clients whose update norm was within C_t."""
        return clip * math.exp(-self.learning_rate * (fraction_within - self.quantile))
