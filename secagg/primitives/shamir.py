"""Shamir t-of-n secret sharing over GF(p), p = 2^31 - 1, limb by limb, vectorized with NumPy.

A secret of up to 32 bytes is cut into nine 30-bit limbs; each limb is shared with its own random
polynomial of degree ``t - 1`` (coefficients uniform in GF(p), by rejection from ``os.urandom``). A share
is the nine evaluations at the holder's point ``x``; any ``t`` shares rebuild every limb by Lagrange
interpolation at 0, and any ``t - 1`` are independent of the secret, limb by limb. Products of two field
elements stay below 2^62, so all arithmetic runs in uint64 without overflow. Reconstruction is batched:
many owners' secrets are rebuilt in one vectorized pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from secagg.errors import ConfigurationError, MessageError

PRIME = (1 << 31) - 1
LIMB_BITS = 30
LIMBS = 9
SECRET_BYTES = 32
SHARE_BYTES = 4 * LIMBS
_P = np.uint64(PRIME)


@dataclass(frozen=True)
class Share:
    """A share: the holder's evaluation point ``x`` (in [1, p)) and the nine limb values at ``x``,
    kept as their 36-byte big-endian encoding (range-checked when used)."""

    x: int
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != SHARE_BYTES:
            raise MessageError(f"a share is {SHARE_BYTES} bytes, got {len(self.data)}")
        if not 0 < self.x < PRIME:
            raise MessageError(f"share point {self.x} outside [1, p)")

    @property
    def limbs(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=">u4").astype(np.uint64)


def _limbs(secret: bytes) -> np.ndarray:
    if len(secret) != SECRET_BYTES:
        raise ConfigurationError(f"secrets are {SECRET_BYTES} bytes, got {len(secret)}")
    value = int.from_bytes(secret, "big")
    return np.array([(value >> (LIMB_BITS * i)) & ((1 << LIMB_BITS) - 1) for i in range(LIMBS)], dtype=np.uint64)


def _from_limbs(limbs: np.ndarray) -> bytes:
    if (limbs >> np.uint64(LIMB_BITS)).any():
        raise MessageError("reconstructed limb out of range: inconsistent shares")
    value = sum(int(v) << (LIMB_BITS * i) for i, v in enumerate(limbs))
    if value >> (8 * SECRET_BYTES):
        raise MessageError("reconstructed value does not fit the secret: inconsistent shares")
    return value.to_bytes(SECRET_BYTES, "big")


def _uniform_field(count: int) -> np.ndarray:
    """``count`` elements uniform in GF(p): 31 random bits each, redrawing the single value p."""
    out = np.frombuffer(os.urandom(4 * count), dtype=np.uint32) & np.uint32(PRIME)
    bad = out == PRIME
    while bad.any():
        out[bad] = np.frombuffer(os.urandom(4 * int(bad.sum())), dtype=np.uint32) & np.uint32(PRIME)
        bad = out == PRIME
    return out.astype(np.uint64)


def split(secret: bytes, threshold: int, xs: list[int]) -> list[Share]:
    """Shares of ``secret`` at the points ``xs`` (distinct, in [1, p)); any ``threshold`` rebuild it."""
    if not 1 <= threshold <= len(xs):
        raise ConfigurationError(f"threshold {threshold} impossible with {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ConfigurationError("share points must be distinct and in [1, p)")
    coefficients = _uniform_field((threshold - 1) * LIMBS).reshape(threshold - 1, LIMBS)
    points = np.asarray(xs, dtype=np.uint64)[:, None]
    y = np.zeros((len(xs), LIMBS), dtype=np.uint64)
    for c in coefficients[::-1]:  # Horner, highest degree first
        y = (y + c) % _P * points % _P
    y = (y + _limbs(secret)) % _P
    encoded = y.astype(">u4")
    return [Share(x, encoded[i].tobytes()) for i, x in enumerate(xs)]


def reconstruct(shares: list[Share], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares with distinct points (the first ``threshold`` are used)."""
    return reconstruct_many([shares], threshold)[0]


def reconstruct_many(groups: list[list[Share]], threshold: int) -> list[bytes]:
    """One secret per group of shares, all interpolated in one vectorized pass."""
    if not groups:
        return []
    if any(len(g) < threshold for g in groups):
        raise ConfigurationError(f"a group has fewer than the {threshold} shares needed")
    used = [g[:threshold] for g in groups]
    xs = np.array([[s.x for s in g] for g in used], dtype=np.uint64)  # (groups, t)
    ys = np.frombuffer(b"".join(s.data for g in used for s in g), dtype=">u4").astype(np.uint64)
    ys = ys.reshape(len(groups), threshold, LIMBS)
    if (ys >= _P).any():
        raise MessageError("share outside the field")
    if any(len(set(row)) != threshold for row in xs.tolist()):
        raise MessageError("duplicate share points")
    # Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i)
    num = np.ones_like(xs)
    den = np.ones_like(xs)
    for j in range(threshold):
        xj = xs[:, j : j + 1]
        diff = (xj + _P - xs) % _P
        mask = np.arange(threshold) != j
        num = np.where(mask, num * xj % _P, num)
        den = np.where(mask, den * diff % _P, den)
    coefficients = num * _inverse(den) % _P
    limbs = np.zeros((len(groups), LIMBS), dtype=np.uint64)
    for i in range(threshold):
        limbs = (limbs + ys[:, i, :] * coefficients[:, i : i + 1] % _P) % _P
    return [_from_limbs(row) for row in limbs]


def _inverse(values: np.ndarray) -> np.ndarray:
    """Elementwise inverse in GF(p) by Fermat: v^(p - 2)."""
    result = np.ones_like(values)
    base = values % _P
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = result * base % _P
        base = base * base % _P
        exponent >>= 1
    return result
