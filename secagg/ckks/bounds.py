"""What a released CKKS aggregate of k honest contributions can be, and the refusal of anything else.

A client encrypts ``alpha * clip(x)`` and ``alpha`` with ``alpha`` in (0, 1], so the exact sum of k
contributions has a weight fraction ``W`` in (0, k] and every coordinate within ``[-W clip, W clip]``. The
release differs from the exact sum by the flooding noise, the release rounding and CKKS's own error; the
tolerance below covers 12 standard deviations of the first, the rounding, and NOISE_TAIL standard deviations
of CKKS's summed error (encryption noise and the rounding of compact uploads, :mod:`secagg.ckks.params`). Under
distributed DP each client adds N(0, noise_sigma^2) after its clip; their sum is allowed NOISE_TAIL standard
deviations (sqrt(k) noise_sigma each), exceeded with probability below 2^-100 per coordinate.
"""

from __future__ import annotations

import numpy as np

from secagg.ckks.params import NOISE_TAIL, CKKSParams
from secagg.ckks.request import Release
from secagg.errors import AggregateOutOfRange


def tolerance(params: CKKSParams, contributors: int) -> float:
    """How far an honest release may stray from the exact sum, per coordinate."""
    flood = 12 * 2.0**-params.flood_bits
    rounding = 2.0**-params.release_bits
    # encryption and upload compression: NOISE_TAIL deviations of the summed error, and the encoding's rounding
    ckks = NOISE_TAIL * np.sqrt(contributors) * params.error_std + contributors * 0.5 / params.scale
    return flood + rounding + ckks


def check_release(release: Release, contributors: int, params: CKKSParams) -> None:
    """Raise :class:`AggregateOutOfRange` unless ``release`` is what ``contributors`` clipped inputs can give."""
    tol = tolerance(params, contributors)
    weight = release.weight
    if not (np.isfinite(weight) and 0 < weight <= contributors + tol):
        raise AggregateOutOfRange(f"released weight fraction {weight} outside (0, {contributors}]")
    values = np.asarray(release.weighted_sum)
    if not np.isfinite(values).all():
        raise AggregateOutOfRange("released weighted sum has NaN or infinite values")
    noise = NOISE_TAIL * params.noise_sigma * np.sqrt(contributors)  # distributed DP's noise shares, summed
    limit = (weight + tol) * params.clip + tol + noise
    if values.size and np.abs(values).max() > limit:
        raise AggregateOutOfRange(f"released weighted sum exceeds {limit:.6g} = (weight + tolerance) * clip "
                                  f"+ noise tail, what {contributors} clipped contributions can produce")
