"""Compact ciphertexts: an RLWE ciphertext's coefficients with their low bits rounded away, bit-packed.

A client's ciphertext in coefficient form is (c0, c1) with ``c0 + c1 s = m + e (mod q)``. Sending
``c0' = c0 + r0`` and ``c1' = c1 + r1``, where r0 and r1 are the errors of rounding away ``d0`` and ``d1`` low
bits, decrypts to ``m + e + r0 + r1 s``: c0's rounding error adds directly, c1's is multiplied by the ternary
secret key, which is why c1 keeps more bits (Kyber's ciphertext compression). Rounding is a public function of
the ciphertext, so it cannot weaken the encryption; :class:`secagg.ckks.params.CKKSParams` sizes d0 and d1.

One value ``x`` in [0, q) with ``d`` bits dropped travels as ``y = ((x + 2^(d-1)) >> d) mod 2^b`` in
``b = bits(q) - d`` bits and comes back as ``x' = (y << d) mod q``, within 2^(d-1) of x mod q (a y that wrapped
to 0 stands for 2^bits(q), which is within 2^(d-1) of x too, since q > 2^bits(q) - 2^(d-1) >= x). Every b-bit y
is a valid value; with ``d = 0`` the value travels whole and must be below q.

Blob of one ciphertext: ``u8 FORMAT``, then c0's first ``reals`` coefficients at b0 bits each, then all N of
c1 at b1 bits, each run packed little-endian (value i at bits [i b, (i + 1) b)) and padded with zero bits to a
whole byte. ``reals`` is N except in an upload's last ciphertext, whose c0 stops after the last real: the
decryptor needs no other coefficient of c0 (they are taken as 0), while c1 enters every coefficient of c1 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from secagg.errors import MessageError

FORMAT = 0xC1


@dataclass(frozen=True)
class Layout:
    """The modulus q, the ring degree N and the bits dropped from c0 and c1."""

    modulus: int
    degree: int
    c0_drop: int
    c1_drop: int

    @property
    def c0_bits(self) -> int:
        return self.modulus.bit_length() - self.c0_drop

    @property
    def c1_bits(self) -> int:
        return self.modulus.bit_length() - self.c1_drop

    def blob_size(self, reals: int) -> int:
        return 1 + packed_size(reals, self.c0_bits) + packed_size(self.degree, self.c1_bits)


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def _period(bits: int) -> tuple[int, int]:
    """Values per period (their bits fill whole 64-bit words) and words per period."""
    g = math.gcd(bits, 64)
    return 64 // g, bits // g


def pack(values: np.ndarray, bits: int) -> bytes:
    """``values`` (uint64, each below 2^bits) as a little-endian bit string of ``bits`` per value."""
    per, words = _period(bits)
    count = len(values)
    rows = -(-count // per)
    v = np.zeros(rows * per, np.uint64)
    v[:count] = values
    v = v.reshape(rows, per)
    out = np.zeros((rows, words), np.uint64)
    for j in range(per):
        word, shift = divmod(j * bits, 64)
        out[:, word] |= v[:, j] << np.uint64(shift)
        if shift + bits > 64:
            out[:, word + 1] |= v[:, j] >> np.uint64(64 - shift)
    return out.astype("<u8").tobytes()[: packed_size(count, bits)]


def unpack(data: bytes | memoryview, count: int, bits: int) -> np.ndarray:
    """The inverse of :func:`pack`; refuses a wrong length or padding bits that are not zero."""
    if len(data) != packed_size(count, bits):
        raise MessageError(f"{len(data)} bytes for {count} values of {bits} bits, expected "
                           f"{packed_size(count, bits)}")
    per, words = _period(bits)
    rows = -(-count // per)
    buffer = bytearray(rows * words * 8)
    buffer[: len(data)] = data
    w = np.frombuffer(bytes(buffer), dtype="<u8").astype(np.uint64).reshape(rows, words)
    v = np.empty((rows, per), np.uint64)
    mask = np.uint64((1 << bits) - 1)
    for j in range(per):
        word, shift = divmod(j * bits, 64)
        col = w[:, word] >> np.uint64(shift)
        if shift + bits > 64:
            col |= w[:, word + 1] << np.uint64(64 - shift)
        v[:, j] = col & mask
    flat = v.reshape(-1)
    if flat[count:].any():
        raise MessageError("non-zero padding bits after the last packed value")
    return flat[:count]


def round_away(x: np.ndarray, drop: int, bits: int) -> np.ndarray:
    """``y = ((x + 2^(drop-1)) >> drop) mod 2^bits`` (``x`` itself when nothing is dropped)."""
    if drop == 0:
        return x.copy()
    y = (x + np.uint64(1 << (drop - 1))) >> np.uint64(drop)
    return y & np.uint64((1 << bits) - 1)


def restore(y: np.ndarray, drop: int, modulus: int) -> np.ndarray:
    """``x' = (y << drop) mod q``; with nothing dropped, a value >= q is refused."""
    q = np.uint64(modulus)
    if drop == 0:
        if (y >= q).any():
            raise MessageError("a coefficient is not a residue mod q0")
        return y
    x = y << np.uint64(drop)  # < 2^bits(q) < 2q
    return np.where(x >= q, x - q, x)


def reals_of(layout: Layout, length: int) -> list[int]:
    """How many of ``length`` reals each ciphertext of an upload carries (N, and the rest in the last)."""
    count = -(-length // layout.degree)
    return [min(layout.degree, length - i * layout.degree) for i in range(count)]


def compress(layout: Layout, c0: np.ndarray, c1: np.ndarray, length: int
             ) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """The blobs of an upload's ciphertexts (rows of ``c0`` and ``c1``, coefficient form) carrying ``length``
    reals, and the (c0', c1') they stand for (c0' zero after the last real): exactly what :func:`decompress`
    gives the receiver."""
    reals = reals_of(layout, length)
    if c0.shape != c1.shape or c0.shape != (len(reals), layout.degree):
        raise ValueError(f"ciphertext rows of shapes {c0.shape}, {c1.shape} for {length} reals")
    y0 = round_away(c0.reshape(-1)[:length], layout.c0_drop, layout.c0_bits)
    y1 = round_away(c1.reshape(-1), layout.c1_drop, layout.c1_bits)
    packed0, packed1 = pack(y0, layout.c0_bits), pack(y1, layout.c1_bits)
    full0, full1 = packed_size(layout.degree, layout.c0_bits), packed_size(layout.degree, layout.c1_bits)
    blobs = [bytes([FORMAT]) + packed0[i * full0:(i + 1) * full0] + packed1[i * full1:(i + 1) * full1]
             for i in range(len(reals))]
    out0 = np.zeros(c0.size, np.uint64)
    out0[:length] = restore(y0, layout.c0_drop, layout.modulus)
    return blobs, out0.reshape(c0.shape), restore(y1, layout.c1_drop, layout.modulus).reshape(c1.shape)


def decompress(layout: Layout, blobs: Sequence[bytes | bytearray | memoryview], length: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(c0', c1'), one row per ciphertext, of an upload's untrusted blobs carrying ``length`` reals;
    :class:`MessageError` on any malformation (count, type, length, format, padding, a residue out of range)."""
    reals = reals_of(layout, length)
    if len(blobs) != len(reals):
        raise MessageError(f"{len(blobs)} compact ciphertexts, expected {len(reals)} for {length} reals")
    parts0, parts1 = [], []
    for blob, r in zip(blobs, reals):
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise MessageError("a compact ciphertext must be bytes")
        data = bytes(blob)
        if len(data) != layout.blob_size(r):
            raise MessageError(f"compact ciphertext of {len(data)} bytes, expected {layout.blob_size(r)}")
        if data[0] != FORMAT:
            raise MessageError(f"compact ciphertext of format {data[0]:#x}, expected {FORMAT:#x}")
        split = 1 + packed_size(r, layout.c0_bits)
        parts0.append(data[1:split])
        parts1.append(data[split:])
    c0 = np.zeros((len(reals), layout.degree), np.uint64)
    y0 = unpack(b"".join(parts0), length, layout.c0_bits)
    c0.reshape(-1)[:length] = restore(y0, layout.c0_drop, layout.modulus)
    y1 = unpack(b"".join(parts1), len(reals) * layout.degree, layout.c1_bits)
    return c0, restore(y1, layout.c1_drop, layout.modulus).reshape(len(reals), layout.degree)
