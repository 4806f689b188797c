"""A Fiat-Shamir linear sketch: the key holder checks that a ciphertext is the sum of the signed uploads
without ever seeing one of them.

Every ciphertext lives mod one data prime q (see :mod:`secagg.ckks.params`) and the aggregator adds them in
coefficient form, so adding ciphertexts adds their coefficient vectors mod q. Write ``x_i`` for the
concatenated coefficients (both polynomials of every ciphertext) that client i's compact upload stands for
(exactly what the aggregator rebuilds and adds, :meth:`secagg.ckks.packing.PublicContext.load_upload`) and
``x*`` for those of the aggregate ``ct*`` the aggregator wants decrypted. The protocol:

1. client i uploads ``ct_i`` and signs its digest ``d_i`` (stage 0, as before);
2. the aggregator adds the uploads into ``ct*`` and derives the challenge
   ``rho = SHA-256(label, key id, session, round, length, digest(ct*), sorted (client, d_i))``;
3. each client answers ``sigma_i = R(rho) x_i mod q`` and signs ``(key id, session, round, client, length,
   d_i, rho, sigma_i)``; ``R(rho)`` is a ``k x len(x)`` matrix of uniform residues mod q expanded from
   ``rho`` with AES-256-CTR (rejection sampling, so exactly uniform);
4. the key holder gets ``ct*`` and, per contributor, ``(client, d_i, both signatures, sigma_i)``, never a
   ``ct_i``; it verifies every signature, recomputes ``rho`` itself and decrypts only if
   ``sum_i sigma_i == R(rho) x* mod q``.

Soundness. ``rho`` is a hash of ``ct*`` and of the record, so the aggregator fixes both before ``R`` is
known; honest clients answer for the uploads they actually sent, so the check holds iff ``R (x* - sum x_i)
= 0``. For ``x* != sum x_i`` that happens with probability at most ``((1 + eps) / q)^k`` per hash query (one
nonzero coordinate of the difference against a uniform row; q is prime); ``k = ceil(128 / log2 q)`` rows
make that <= 2^-128 even for an aggregator that grinds hashes offline. A forged, replayed or other-rho
sketch fails its signature. What this cannot exclude (nor could the key holder summing the uploads itself):
a corrupt client that colludes with the aggregator contributes anything, ``x - ct_k`` included.

Privacy towards the key holder. A compact public-key encryption is ``c0 = m + e' - c1 s`` with ``e'`` small
(the encryption noise and the rounding of both polynomials), so with ``S`` the negacyclic matrix of ``s``,
``sigma_i = R0 (m_i + e'_i) + (R1 - R0 S) c1_i``. ``c1_i`` is ``a u_i + e1_i`` (pseudo-uniform under RLWE:
the client's fresh ``u_i``; the key holder's ``s`` does not help) with its low bits rounded away, so it has
about N (log2 q - d1) bits of min-entropy, far more than the k log2 q bits of ``W c1_i``; the key holder's mask
matrix ``W = R1 - R0 S`` has full rank k unless ``R1`` happens to lie in a set of probability
<= k q^-(N-k+1), and ``R`` is a hash output, not the key holder's choice (a key holder that chose
``R1 = R0 S`` would read ``R0 m_i``), so ``W c1_i`` is close to uniform (leftover hash lemma over the rows). So the ``sigma_i`` are pseudo-uniform given ``ct*``, apart from
their sum, which ``ct*`` determines. The aggregator learns nothing either: it holds ``ct_i`` and could
compute every ``sigma_i`` itself.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Iterable, Iterator, Sequence

import numpy as np
import tenseal.sealapi as seal

from secagg.ckks import seal_data
from secagg.errors import ConfigurationError
from secagg.primitives.prg import MaskExpander, keystream

CHALLENGE_BYTES = 32
SOUNDNESS_BITS = 128
_LIMB_BITS = 20  # 3 limbs hold a 60-bit residue; a limb product has 40 bits
_LIMBS = 3
_CHUNK = 1 << 22  # 2^22 products of 40 bits add up below 2^64
_PIECE = 1 << 18  # challenge words generated and used at a time (2 MiB), below _CHUNK
_CHALLENGE_LABEL = b"secagg/ckks-challenge/v1"
_EXPAND_LABEL = b"secagg/ckks-sketch-rows/v1"


def rows_for(modulus: int) -> int:
    """How many independent sketch rows make a false sum pass with probability <= 2^-SOUNDNESS_BITS."""
    return math.ceil(SOUNDNESS_BITS / math.floor(math.log2(modulus)))


def challenge(key_id: bytes, session: bytes, round: int, length: int, aggregate_digest: bytes,
              record: Iterable[tuple[int, bytes]]) -> bytes:
    """``rho``: binds the aggregate's digest and every contributor's (client, upload digest), sorted by client."""
    entries = sorted(record)
    h = hashlib.sha256(_CHALLENGE_LABEL + key_id + session + struct.pack(">II", round, length) + aggregate_digest)
    h.update(struct.pack(">I", len(entries)))
    for client, digest in entries:
        h.update(struct.pack(">I", client) + digest)
    return h.digest()


def coefficients(ciphertexts: Sequence[seal.Ciphertext]) -> np.ndarray:
    """Every coefficient (as stored: coefficient form for uploads and sums; residues mod the data prime) of every
    polynomial of ``ciphertexts``."""
    parts = [seal_data.coefficients(c) for c in ciphertexts]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def challenge_rows(rho: bytes, columns: int, modulus: int) -> np.ndarray:
    """``R(rho)``: ``rows_for(modulus) x columns`` residues, exactly uniform mod ``modulus`` (AES-CTR words
    masked to its bit length, those >= modulus rejected; the stream is cut into seeds derived from rho)."""
    if len(rho) != CHALLENGE_BYTES or modulus < 3 or columns < 1:
        raise ConfigurationError("a sketch needs a 32-byte challenge, an odd prime modulus and a column")
    need = rows_for(modulus) * columns
    mask = np.uint64((1 << modulus.bit_length()) - 1)
    block = need + need // 2 + 1024  # acceptance is >= 1/2, about 1 for SEAL's primes near 2^bits
    expander = MaskExpander(block, np.uint64)
    parts, have, counter = [], 0, 0
    while have < need:
        seed = hashlib.sha256(_EXPAND_LABEL + rho + struct.pack(">I", counter)).digest()
        words = expander.expand(seed) & mask
        kept = words[words < np.uint64(modulus)]
        parts.append(kept[: need - have])
        have += len(parts[-1])
        counter += 1
    return np.concatenate(parts).reshape(rows_for(modulus), columns)


def sketch(rho: bytes, coeffs: np.ndarray, modulus: int) -> tuple[int, ...]:
    """``R(rho) coeffs mod modulus``, exactly (limbs of 20 bits, integer dot products, Python ints). The rows of
    :func:`challenge_rows` are generated and used a piece at a time, so the memory a sketch takes does not grow
    with ``coeffs`` (which the caller holds)."""
    if coeffs.dtype != np.uint64 or coeffs.ndim != 1:
        raise ConfigurationError("coefficients must be a flat uint64 vector")
    if modulus.bit_length() > _LIMBS * _LIMB_BITS:
        raise ConfigurationError(f"a {modulus.bit_length()}-bit modulus is beyond the sketch's limbs")
    columns, rows = len(coeffs), rows_for(modulus)
    totals = [0] * rows
    position = 0
    for words in _accepted_words(rho, columns, modulus):
        while len(words):
            row, column = divmod(position, columns)
            take = min(len(words), columns - column)
            totals[row] += _exact_dot(words[:take], coeffs[column:column + take])
            words, position = words[take:], position + take
    return tuple(t % modulus for t in totals)


def _accepted_words(rho: bytes, columns: int, modulus: int) -> Iterator[np.ndarray]:
    """The words of ``R(rho)`` in row-major order, in pieces of at most :data:`_PIECE` (the stream
    :func:`challenge_rows` reshapes, generated lazily)."""
    if len(rho) != CHALLENGE_BYTES or modulus < 3 or columns < 1:
        raise ConfigurationError("a sketch needs a 32-byte challenge, an odd prime modulus and a column")
    need = rows_for(modulus) * columns
    mask = np.uint64((1 << modulus.bit_length()) - 1)
    block = need + need // 2 + 1024  # as challenge_rows: each seed's stream is this many words
    have, counter = 0, 0
    while have < need:
        stream = keystream(hashlib.sha256(_EXPAND_LABEL + rho + struct.pack(">I", counter)).digest())
        left = block
        while left and have < need:
            n = min(_PIECE, left)
            words = np.frombuffer(stream.update(bytes(8 * n)), dtype=np.uint64) & mask
            left -= n
            kept = words[words < np.uint64(modulus)][: need - have]
            have += len(kept)
            yield kept
        counter += 1


def _exact_dot(r: np.ndarray, x: np.ndarray) -> int:
    """sum r_i x_i over the integers, for at most :data:`_CHUNK` residues of at most 60 bits."""
    rl, xl = _limbs(r), _limbs(x)
    return sum(int(np.dot(rl[a], xl[b])) << (_LIMB_BITS * (a + b)) for a in range(_LIMBS) for b in range(_LIMBS))


def add(sketches: Iterable[Sequence[int]], modulus: int, rows: int) -> tuple[int, ...]:
    """The coordinate-wise sum mod ``modulus`` of several sketches of ``rows`` values."""
    total = [0] * rows
    for s in sketches:
        total = [(t + v) % modulus for t, v in zip(total, s)]
    return tuple(total)


def _limbs(values: np.ndarray) -> np.ndarray:
    mask = np.uint64((1 << _LIMB_BITS) - 1)
    return np.stack([(values >> np.uint64(_LIMB_BITS * j)) & mask for j in range(_LIMBS)])
