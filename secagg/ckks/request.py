"""What the aggregator asks of the key holder, and what the key holder releases."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SignedSketch:
    """One contributor as the key holder sees it: the digest of its upload and its signature over it
    (:func:`secagg.ckks.signing.contribution_payload`), and its sketch of that upload under the round's
    challenge with its signature (:func:`secagg.ckks.signing.sketch_payload`). Never the ciphertexts."""

    client: int
    digest: bytes
    update_signature: bytes
    sketch: tuple[int, ...]
    sketch_signature: bytes


@dataclass(frozen=True)
class DecryptionRequest:
    """Decrypt ``aggregate``, encrypted under the key named ``key_id``, as the sum of ``contributions`` to one
    round. The key holder recomputes the challenge and checks the contributors' sketches add up to the
    aggregate's (see :mod:`secagg.ckks.sketch`) before it decrypts."""

    session: bytes
    round: int
    key_id: bytes
    length: int  # reals in the aggregate: the update dimension plus the weight
    aggregate: tuple[bytes, ...]  # serialized ciphertexts of the sum
    contributions: tuple[SignedSketch, ...]


@dataclass(frozen=True)
class Release:
    """The released weighted sum (flooded, rounded) and total weight fraction."""

    weighted_sum: np.ndarray
    weight: float
