"""Fixed-point encoding of weighted float updates into the ring Z_(2^w), w = 32 or 64.

A client with update ``x`` and weight ``weight`` (at most the public bound ``max_weight``) encodes
``alpha = weight / max_weight`` and ``y = alpha * clip(x, -clip, clip)``, shifted to be non-negative::

    q_i = sround((y_i + clip) * scale),    scale = (2^p - 1) / (2 clip)      -> q_i in [0, 2^p - 1]
    q_w = sround(alpha * (2^p - 1))                                            -> the extra weight element

``sround`` is unbiased stochastic rounding (floor, plus one with probability equal to the fraction) driven
by a CSPRNG (AES-CTR keyed from ``os.urandom``). The sum of ``n`` encodings is below ``n * 2^p``, so the
required ring bits are ``p + ceil(log2 n)``; the word is the smallest of 32 or 64 bits that holds them, and
a configuration needing more is refused. Decoding the sum of ``k`` contributions::

    sum y = sum q / scale - k * clip,    sum alpha = sum q_w / (2^p - 1),    mean = sum y / sum alpha
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from secagg.errors import ConfigurationError, UpdateRejected
from secagg.primitives.prg import MaskExpander


@dataclass(frozen=True)
class FixedPointEncoder:
    """Encodes updates of ``dimension`` floats for at most ``max_clients`` summands without wrap-around."""

    dimension: int
    max_clients: int
    clip: float = 1.0
    precision_bits: int = 20
    max_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.dimension < 1 or self.max_clients < 1:
            raise ConfigurationError("dimension and max_clients must be positive")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError(f"clip must be finite and positive, got {self.clip}")
        if not 1 <= self.precision_bits <= 52:
            raise ConfigurationError(f"precision_bits must be in [1, 52], got {self.precision_bits}")
        if not (math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigurationError(f"max_weight must be finite and positive, got {self.max_weight}")
        if self.ring_bits > 64:
            raise ConfigurationError(
                f"{self.max_clients} clients at {self.precision_bits} bits of precision need a "
                f"{self.ring_bits}-bit ring; the sum could wrap. Lower precision_bits or the number of clients.")

    @property
    def ring_bits(self) -> int:
        """Bits the largest possible sum needs."""
        return self.precision_bits + max(1, math.ceil(math.log2(self.max_clients)))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32) if self.ring_bits <= 32 else np.dtype(np.uint64)

    @property
    def length(self) -> int:
        """Encoded words: the update plus the weight element."""
        return self.dimension + 1

    @property
    def levels(self) -> int:
        return (1 << self.precision_bits) - 1

    @property
    def scale(self) -> float:
        return self.levels / (2.0 * self.clip)

    @property
    def step(self) -> float:
        """The quantization step: the largest rounding error of one coordinate of one client."""
        return 1.0 / self.scale

    def encode(self, update: np.ndarray, weight: float) -> np.ndarray:
        """The ring vector (length ``dimension + 1``) of one client's weighted update."""
        if update.shape != (self.dimension,):
            raise UpdateRejected(f"update of shape {update.shape}, expected ({self.dimension},)")
        if not np.isfinite(update).all():
            raise UpdateRejected("update has NaN or infinite values")
        if not (math.isfinite(weight) and 0 < weight <= self.max_weight):
            raise UpdateRejected(f"weight {weight} outside (0, max_weight={self.max_weight}]")
        alpha = weight / self.max_weight
        values = np.empty(self.length, dtype=np.float64)
        np.clip(update, -self.clip, self.clip, out=values[:-1])
        values[:-1] *= alpha
        values[:-1] += self.clip
        values[:-1] *= self.scale
        values[-1] = alpha * self.levels
        return self._stochastic_round(values)

    def decode(self, total: np.ndarray, contributors: int) -> tuple[np.ndarray, float]:
        """The weighted mean update (float32) and total weight from the sum of ``contributors`` encodings."""
        if total.shape != (self.length,):
            raise UpdateRejected(f"sum of shape {total.shape}, expected ({self.length},)")
        if not 1 <= contributors <= self.max_clients:
            raise ConfigurationError(f"{contributors} contributors outside [1, {self.max_clients}]")
        alpha_sum = float(total[-1]) / self.levels
        if alpha_sum <= 0:
            raise UpdateRejected("aggregate weight is zero")
        weighted = total[:-1].astype(np.float64) / self.scale - contributors * self.clip
        return (weighted / alpha_sum).astype(np.float32), alpha_sum * self.max_weight

    def _stochastic_round(self, values: np.ndarray) -> np.ndarray:
        """``floor(v + u)`` with ``u`` uniform in [0, 1): rounds up with probability equal to the fraction."""
        values += MaskExpander(self.length, np.uint32).uniform(os.urandom(32))
        return values.astype(self.dtype)
