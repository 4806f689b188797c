"""Noise that protects privacy, drawn from AES-CTR keyed by ``os.urandom`` (never a statistical PRNG).

``secure_gaussian``: continuous N(0, sigma^2) by Box-Muller. ``discrete_gaussian``: the discrete Gaussian
N_Z(0, sigma^2), P(x) proportional to exp(-x^2 / (2 sigma^2)) on the integers, by the rejection sampler of
Canonne, Kamath and Steinke (NeurIPS 2020, Algorithm 3): propose a discrete Laplace of scale
t = floor(sigma) + 1, accept with probability exp(-(|y| - sigma^2 / t)^2 / (2 sigma^2)). It is vectorised
over 53-bit uniforms, so it is exact up to floating-point rounding of the logarithm and exponential (the
paper's sampler avoids floating point altogether; at the sigmas of distributed DP, thousands of
quantization steps, the rounding is far below one integer).
"""

from __future__ import annotations

import math
import os

import numpy as np

from secagg.errors import ConfigurationError
from secagg.primitives.prg import SEED_BYTES, MaskExpander


def secure_uniform(count: int) -> np.ndarray:
    """``count`` floats uniform on (0, 1], 53 bits each."""
    if count < 1:
        raise ConfigurationError(f"need a positive count, got {count}")
    words = MaskExpander(count, np.uint64).expand(os.urandom(SEED_BYTES)) >> np.uint64(11)
    return (words.astype(np.float64) + 1.0) * 2.0**-53


def secure_gaussian(count: int, sigma: float) -> np.ndarray:
    """``count`` samples of N(0, sigma^2) (Box-Muller)."""
    if count < 1 or not sigma > 0:
        raise ConfigurationError(f"need a positive count and sigma, got {count} and {sigma}")
    half = (count + 1) // 2
    u = secure_uniform(2 * half)
    radius = np.sqrt(-2.0 * np.log(u[:half]))
    angle = 2.0 * np.pi * u[half:]
    return (sigma * np.concatenate([radius * np.cos(angle), radius * np.sin(angle)]))[:count]


MIN_DISCRETE_SIGMA = 2.0**-20  # narrower is 0 with probability above 1 - 2^-(2^38); sigma^2 may underflow


def discrete_gaussian(count: int, sigma: float) -> np.ndarray:
    """``count`` samples of N_Z(0, sigma^2) as int64."""
    if count < 1 or not (math.isfinite(sigma) and sigma >= MIN_DISCRETE_SIGMA):
        raise ConfigurationError(f"need a positive count and a finite sigma of at least {MIN_DISCRETE_SIGMA}, "
                                 f"got {count} and {sigma}")
    if sigma > 2.0**40:
        raise ConfigurationError(f"sigma {sigma} is too large for 53-bit uniforms")
    t = math.floor(sigma) + 1
    out = np.empty(count, dtype=np.int64)
    filled = 0
    while filled < count:
        batch = 2 * (count - filled) + 64  # acceptance is about 0.5 to 0.76, depending on sigma
        u = secure_uniform(3 * batch)
        # discrete Laplace of scale t: the difference of two geometrics, floor(-t log U) on {0, 1, ...}
        y = np.floor(-t * np.log(u[:batch])) - np.floor(-t * np.log(u[batch:2 * batch]))
        accept = u[2 * batch:] <= np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2.0 * sigma**2))
        taken = y[accept][: count - filled]
        out[filled:filled + taken.size] = taken
        filled += taken.size
    return out
