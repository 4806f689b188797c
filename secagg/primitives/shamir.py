"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

A 32-byte secret is one field element. Shares are points ``(x, f(x))`` of a random polynomial of degree
``t - 1`` with ``f(0) = secret``; any ``t`` of them reconstruct it by Lagrange interpolation at 0 and any
``t - 1`` are independent of it. Coefficients come from ``secrets.randbelow``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from secagg.errors import ConfigurationError, MessageError

PRIME = 2**521 - 1
ELEMENT_BYTES = 66  # ceil(521 / 8)
MAX_SECRET_BYTES = 64


@dataclass(frozen=True)
class Share:
    """A share: the evaluation point ``x`` (a nonzero participant index) and ``y = f(x)``."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.y.to_bytes(ELEMENT_BYTES, "big")

    @classmethod
    def from_bytes(cls, x: int, data: bytes) -> Share:
        if len(data) != ELEMENT_BYTES:
            raise MessageError(f"a share is {ELEMENT_BYTES} bytes, got {len(data)}")
        y = int.from_bytes(data, "big")
        if y >= PRIME or not 0 < x < PRIME:
            raise MessageError("share outside the field")
        return cls(x, y)


def split(secret: bytes, threshold: int, xs: list[int]) -> list[Share]:
    """Shares of ``secret`` at the points ``xs`` (distinct, nonzero); any ``threshold`` reconstruct it."""
    if not 1 <= threshold <= len(xs):
        raise ConfigurationError(f"threshold {threshold} impossible with {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ConfigurationError("share points must be distinct and nonzero")
    if len(secret) > MAX_SECRET_BYTES:
        raise ConfigurationError(f"secret of {len(secret)} bytes exceeds {MAX_SECRET_BYTES}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares.append(Share(x, y))
    return shares


def reconstruct(shares: list[Share], threshold: int, secret_len: int) -> bytes:
    """The secret from at least ``threshold`` shares with distinct points (the first ``threshold`` are used)."""
    if len(shares) < threshold:
        raise ConfigurationError(f"{len(shares)} shares, {threshold} needed")
    used = shares[:threshold]
    xs = [s.x for s in used]
    if len(set(xs)) != len(xs):
        raise MessageError("duplicate share points")
    secret = 0
    for i, si in enumerate(used):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - si.x) % PRIME
        secret = (secret + si.y * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * secret_len):
        raise MessageError("reconstructed value does not fit the secret length: inconsistent shares")
    return secret.to_bytes(secret_len, "big")
