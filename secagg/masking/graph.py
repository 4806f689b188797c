"""The SecAgg+ communication graph: a Harary graph over a permutation every client can recompute.

The permutation comes from a public seed that hashes the round's transcript digest (the context, every
advertised key and, with the consistency check, every client's revealed random value). Without the
consistency check the server could still choose whom to leave out of the key list and so grind the seed;
with it, each client commits to its random value inside its signed advertisement and reveals it only once
the list is fixed, and every listed reveal must be present, so the server learns the seed only when it can
no longer change it (it may only abort the round). Neighbours are the k/2 nearest positions on each side of
the permuted ring; k >= n - 1 gives the complete graph (classic SecAgg).
"""

from __future__ import annotations

import hashlib

import numpy as np

from secagg.primitives.prg import MaskExpander

_LABEL = b"secagg/graph-seed/v1"


def graph_seed(transcript: bytes) -> bytes:
    """SHA-256 over the transcript digest (:func:`secagg.masking.messages.transcript_digest`)."""
    return hashlib.sha256(_LABEL + transcript).digest()


def permutation(ids: list[int], seed: bytes) -> list[int]:
    """A uniformly random ordering of ``ids``: sorted by 64-bit AES-CTR keys (ties, ~n^2/2^65 likely, by id)."""
    order = np.array(sorted(ids), dtype=np.int64)
    keys = MaskExpander(len(order), np.uint64).expand(seed)
    return order[np.lexsort((order, keys))].tolist()


def neighbours(ids: list[int], degree: int, seed: bytes) -> dict[int, frozenset[int]]:
    """Each id's neighbours in the degree-``degree`` Harary graph over the seeded permutation."""
    n = len(ids)
    if degree >= n - 1:
        everyone = frozenset(ids)
        return {u: everyone - {u} for u in ids}
    order = permutation(ids, seed)
    return {u: _ring_neighbours(order, pos, degree) for pos, u in enumerate(order)}


class Ring:
    """The graph as a client needs it: anyone's neighbourhood from one permutation (the ids within a ring
    distance of degree/2; everyone else on the complete graph)."""

    def __init__(self, ids: list[int], degree: int, seed: bytes) -> None:
        self.complete = degree >= len(ids) - 1
        self.order = list(ids) if self.complete else permutation(ids, seed)
        self.position = {u: i for i, u in enumerate(self.order)}
        self.degree = len(ids) - 1 if self.complete else degree

    def neighbours(self, client: int) -> frozenset[int]:
        if self.complete:
            return frozenset(self.order) - {client}
        return _ring_neighbours(self.order, self.position[client], self.degree)


def _ring_neighbours(order: list[int], pos: int, degree: int) -> frozenset[int]:
    n, half = len(order), degree // 2
    return frozenset(order[(pos + d) % n] for d in range(-half, half + 1) if d)
