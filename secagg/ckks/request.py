"""What the aggregator asks of the key holder, and what the key holder releases."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SignedContribution:
    """One client's ciphertexts exactly as it sent them, and its Ed25519 signature over their digest
    (see :func:`secagg.ckks.signing.contribution_payload`)."""

    client: int
    ciphertexts: tuple[bytes, ...]
    signature: bytes


@dataclass(frozen=True)
class DecryptionRequest:
    """Decrypt the sum of ``contributions``, encrypted under the key named ``key_id``, of one round.

    The key holder adds the ciphertexts itself: the aggregator cannot hand it any other ciphertext.
    """

    session: bytes
    round: int
    key_id: bytes
    length: int  # reals in the aggregate: the update dimension plus the weight
    contributions: tuple[SignedContribution, ...]


@dataclass(frozen=True)
class Release:
    """The released weighted sum (flooded, rounded) and total weight fraction."""

    weighted_sum: np.ndarray
    weight: float
