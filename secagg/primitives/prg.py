"""Mask expansion: AES-256 in counter mode turns a 32-byte seed into a vector of ring words.

This is the hot path of pairwise masking. Keystream is written with ``update_into`` into one preallocated
buffer and added to (or subtracted from) an accumulator in place; unsigned NumPy arithmetic wraps modulo
2^32 or 2^64, which is exactly the ring. Each seed is used once (keys are bound to session, round, the pair
of ids and a purpose), so a fixed all-zero counter block is safe.
"""

from __future__ import annotations


import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.errors import ConfigurationError

SEED_BYTES = 32
_BLOCK = 16
_ZERO_IV = bytes(_BLOCK)
_CHUNK_WORDS = 1 << 16  # 256 KiB of uint32: a piece of the accumulator that stays in cache


def keystream(seed: bytes):  # type: ignore[no-untyped-def]
    """The AES-256-CTR keystream of ``seed`` (zero counter block), read in order by ``update(zeros)``: what
    :class:`MaskExpander` expands, for callers that consume it a piece at a time."""
    if len(seed) != SEED_BYTES:
        raise ConfigurationError(f"seed must be {SEED_BYTES} bytes, got {len(seed)}")
    return Cipher(algorithms.AES(seed), modes.CTR(_ZERO_IV)).encryptor()


class MaskExpander:
    """Expands seeds into ``length`` words of ``dtype`` (uint32 or uint64), reusing its buffers."""

    def __init__(self, length: int, dtype: np.dtype | type = np.uint32) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.uint32), np.dtype(np.uint64)):
            raise ConfigurationError(f"ring words must be uint32 or uint64, got {self.dtype}")
        if length < 1:
            raise ConfigurationError(f"mask length must be positive, got {length}")
        self.length = length
        nbytes = length * self.dtype.itemsize
        self._zeros = bytes(nbytes)
        self._out = bytearray(nbytes + _BLOCK - 1)  # update_into needs block_size - 1 spare bytes
        self._words = np.frombuffer(self._out, dtype=self.dtype, count=length)

    def expand(self, seed: bytes) -> np.ndarray:
        """The mask of ``seed``: a view into the shared buffer, valid until the next call."""
        self._encryptor(seed).update_into(self._zeros, self._out)
        return self._words

    def add(self, seed: bytes, accumulator: np.ndarray) -> None:
        np.add(accumulator, self.expand(seed), out=accumulator)

    def subtract(self, seed: bytes, accumulator: np.ndarray) -> None:
        np.subtract(accumulator, self.expand(seed), out=accumulator)

    def apply(self, plus: list[bytes], minus: list[bytes], accumulator: np.ndarray) -> None:
        """``accumulator += sum PRG(plus) - sum PRG(minus)``, chunk by chunk so that the piece of the
        accumulator being updated stays in cache while every seed's keystream is added to it."""
        if accumulator.shape != (self.length,) or accumulator.dtype != self.dtype:
            raise ConfigurationError("accumulator does not match the expander")
        streams = [(self._encryptor(s), np.add) for s in plus] + [(self._encryptor(s), np.subtract) for s in minus]
        size = self.dtype.itemsize
        for start in range(0, self.length, _CHUNK_WORDS):
            stop = min(start + _CHUNK_WORDS, self.length)
            nbytes = (stop - start) * size
            zeros = memoryview(self._zeros)[:nbytes]
            words = self._words[: stop - start]
            piece = accumulator[start:stop]
            for encryptor, op in streams:
                encryptor.update_into(zeros, self._out)
                op(piece, words, out=piece)

    @staticmethod
    def _encryptor(seed: bytes):  # type: ignore[no-untyped-def]
        return keystream(seed)

    def uniform(self, seed: bytes) -> np.ndarray:
        """``length`` floats uniform in [0, 1), a fresh array (for stochastic rounding)."""
        out = self.expand(seed).astype(np.float64)
        out *= 1.0 / float(2 ** (8 * self.dtype.itemsize))
        return out
