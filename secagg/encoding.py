"""Fixed-point encoding of weighted float updates into the ring Z_(2^w), w = 32 or 64.

A client with update ``x`` and weight ``weight`` (at most the public bound ``max_weight``) encodes
``alpha = weight / max_weight`` and ``y = alpha * clip(x, -clip, clip)`` around the integer offset
``o = 2^(p-1)``::

    q_i = sround(y_i * scale + o),    scale = (2^(p-1) - 1) / clip           -> q_i in [1, 2^p - 1]
    q_w = sround(alpha * (2^p - 1))                                            -> the extra weight element

``sround`` is unbiased stochastic rounding (floor, plus one with probability equal to the fraction) driven
by a CSPRNG (AES-CTR keyed from ``os.urandom``). With ``noise_sigma > 0`` each client then adds discrete
Gaussian noise N_Z(0, noise_sigma^2) to every ``q_i`` (not to the weight element): the building block of
distributed DP under masking (Kairouz, Liu, Steinke 2021), so the ring sum carries the noise of all
contributors and no party ever sees an unnoised sum.

Decoding the sum of ``k`` contributions reads ``sum q_i - k o`` as a signed (two's complement) word::

    sum y = (sum q - k o) / scale,    sum alpha = sum q_w / (2^p - 1),    mean = sum y / sum alpha

The centred sum lies in (-k 2^(p-1), k 2^(p-1)), so ``p + ceil(log2 n)`` ring bits hold ``n`` summands;
with noise the ring also holds ``NOISE_TAIL`` standard deviations of the summed noise (a wrap then has
probability below 1e-50 per coordinate). The word is the smallest of 32 or 64 bits that holds them, and a
configuration needing more is refused.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from secagg.errors import ConfigurationError, UpdateRejected
from secagg.primitives.noise import MIN_DISCRETE_SIGMA, discrete_gaussian
from secagg.primitives.prg import MaskExpander

NOISE_TAIL = 16.0


@dataclass(frozen=True)
class FixedPointEncoder:
    """Encodes updates of ``dimension`` floats for at most ``max_clients`` summands without wrap-around."""

    dimension: int
    max_clients: int
    clip: float = 1.0
    precision_bits: int = 20
    max_weight: float = 1.0
    noise_sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.dimension < 1 or self.max_clients < 1:
            raise ConfigurationError("dimension and max_clients must be positive")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError(f"clip must be finite and positive, got {self.clip}")
        if not 2 <= self.precision_bits <= 52:
            raise ConfigurationError(f"precision_bits must be in [2, 52], got {self.precision_bits}")
        if not (math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigurationError(f"max_weight must be finite and positive, got {self.max_weight}")
        if not (math.isfinite(self.noise_sigma) and (self.noise_sigma == 0 or self.noise_sigma >= MIN_DISCRETE_SIGMA)):
            raise ConfigurationError(f"noise_sigma must be 0 or finite and at least {MIN_DISCRETE_SIGMA}, "
                                     f"got {self.noise_sigma}")
        if self.ring_bits > 64:
            raise ConfigurationError(
                f"{self.max_clients} clients at {self.precision_bits} bits of precision need a "
                f"{self.ring_bits}-bit ring; the sum could wrap. Lower precision_bits or the number of clients.")

    @property
    def ring_bits(self) -> int:
        """Bits the largest possible sum (and, with noise, NOISE_TAIL deviations of its noise) needs."""
        bits = self.precision_bits + max(1, math.ceil(math.log2(self.max_clients)))
        if self.noise_sigma > 0:
            reach = (self.max_clients * 2.0 ** (self.precision_bits - 1)
                     + NOISE_TAIL * self.noise_sigma * math.sqrt(self.max_clients))
            bits = max(bits, 1 + math.ceil(math.log2(reach)))
        return bits

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
    def offset(self) -> int:
        return 1 << (self.precision_bits - 1)

    @property
    def scale(self) -> float:
        return (self.offset - 1) / self.clip

    @property
    def step(self) -> float:
        """The quantization step: the largest rounding error of one coordinate of one client."""
        return 1.0 / self.scale

    def l2_sensitivity(self, l2_bound: float) -> float:
        """A bound, in ring units, on the L2 norm of one client's centred encoding ``q - o`` when its
        update has L2 norm at most ``l2_bound`` and weight ``max_weight``: scaling gives at most
        ``scale * l2_bound``, and rounding moves each coordinate by less than 1."""
        return self.scale * l2_bound + math.sqrt(self.dimension)

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
        values[:-1] *= alpha * self.scale
        values[:-1] += self.offset
        values[-1] = alpha * self.levels
        encoded = self._stochastic_round(values)
        if self.noise_sigma > 0:
            noise = discrete_gaussian(self.dimension, self.noise_sigma)
            np.add(encoded[:-1], noise.astype(self.dtype), out=encoded[:-1])  # wraps modulo 2^w
        return encoded

    def reach(self, contributors: int) -> int:
        """The largest absolute centred sum ``contributors`` honest encodings can produce: each centred
        coordinate lies in [-o, o] (o - 1 after scaling, one more for a float rounding at the clip), plus
        NOISE_TAIL deviations of the summed noise."""
        tail = math.ceil(NOISE_TAIL * self.noise_sigma * math.sqrt(contributors)) if self.noise_sigma > 0 else 0
        return contributors * self.offset + tail

    def decode(self, total: np.ndarray, contributors: int) -> tuple[np.ndarray, float]:
        """The weighted mean update (float32) and total weight from the sum of ``contributors`` encodings.

        Refuses (:class:`UpdateRejected`) a sum no ``contributors`` clipped encodings can produce: a total
        weight outside (0, contributors * max_weight] or a coordinate beyond :meth:`reach`. Such a sum means
        some client sent out-of-range ring words, which would otherwise shift the mean without a trace.
        """
        if total.shape != (self.length,):
            raise UpdateRejected(f"sum of shape {total.shape}, expected ({self.length},)")
        if not 1 <= contributors <= self.max_clients:
            raise ConfigurationError(f"{contributors} contributors outside [1, {self.max_clients}]")
        weight_word = int(total[-1])
        if not 0 < weight_word <= contributors * self.levels:
            raise UpdateRejected(f"aggregate weight word {weight_word} outside (0, {contributors} x {self.levels}]")
        alpha_sum = weight_word / self.levels
        centred = total[:-1] - self.dtype.type(contributors * self.offset)  # wraps modulo 2^w
        signed = centred.view(np.int32 if self.dtype == np.uint32 else np.int64)
        reach = self.reach(contributors)
        if signed.size and max(-int(signed.min()), int(signed.max())) > reach:
            raise UpdateRejected(f"aggregate coordinate beyond the {reach} ring units {contributors} clipped "
                                 f"encodings can reach: a contribution was out of range")
        weighted = signed.astype(np.float64) / self.scale
        return (weighted / alpha_sum).astype(np.float32), alpha_sum * self.max_weight

    def _stochastic_round(self, values: np.ndarray) -> np.ndarray:
        """``floor(v + u)`` with ``u`` uniform in [0, 1): rounds up with probability equal to the fraction."""
        values += MaskExpander(self.length, np.uint32).uniform(os.urandom(32))
        return values.astype(self.dtype)
