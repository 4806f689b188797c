"""The SecAgg+ communication graph: a Harary graph over a permutation every client can recompute.

The permutation comes from a public seed that hashes the session, the round and every advertised key,
so it is fixed only after all clients have chosen their keys: the server cannot pick anyone's neighbours
(it can only choose whom to leave out of the key list, which every client sees). Neighbours are the k/2
nearest positions on each side of the permuted ring; k >= n - 1 gives the complete graph (classic SecAgg).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable

import numpy as np

from secagg.primitives.prg import MaskExpander

_LABEL = b"secagg/graph-seed/v1"


def graph_seed(session: bytes, round: int, advertised: Iterable[tuple[int, bytes, bytes]]) -> bytes:
    """SHA-256 over the context and every ``(id, encryption key, mask key)`` in increasing id order."""
    h = hashlib.sha256(_LABEL + session + struct.pack(">I", round))
    for client, c_pk, s_pk in sorted(advertised):
        h.update(struct.pack(">I", client) + c_pk + s_pk)
    return h.digest()


def permutation(ids: list[int], seed: bytes) -> list[int]:
    """A uniformly random ordering of ``ids`` (Fisher-Yates on an AES-CTR stream, with rejection)."""
    order = sorted(ids)
    n = len(order)
    words = iter(MaskExpander(max(4 * n, 8), np.uint64).expand(seed).tolist())
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = (1 << 64) - ((1 << 64) % bound)
        w = next(words)
        while w >= limit:
            w = next(words)
        j = w % bound
        order[i], order[j] = order[j], order[i]
    return order


def neighbours(ids: list[int], degree: int, seed: bytes) -> dict[int, frozenset[int]]:
    """Each id's neighbours in the degree-``degree`` Harary graph over the seeded permutation."""
    n = len(ids)
    if degree >= n - 1:
        everyone = frozenset(ids)
        return {u: everyone - {u} for u in ids}
    order = permutation(ids, seed)
    half = degree // 2
    return {u: frozenset(order[(pos + d) % n] for d in range(-half, half + 1) if d) for pos, u in enumerate(order)}
