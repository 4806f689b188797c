"""What a CKKS client signs: the round and a digest of its ciphertexts, so contributors can be counted."""

from __future__ import annotations

import hashlib
import struct


def contribution_digest(ciphertexts: list[bytes]) -> bytes:
    h = hashlib.sha256(b"secagg/ckks-ciphertexts/v1")
    for c in ciphertexts:
        h.update(struct.pack(">I", len(c)) + bytes(c))
    return h.digest()


def contribution_payload(session: bytes, round: int, client: int, digest: bytes) -> bytes:
    return b"secagg/ckks-contribution/v1" + session + struct.pack(">II", round, client) + digest
