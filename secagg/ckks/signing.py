"""What CKKS parties sign: a client its contribution, the key holder its public key.

A contribution signature binds the key it was encrypted under, the round, the client, the number of reals
and a digest of the exact ciphertext bytes; a sketch signature binds the same and the challenge and sketch
the client answered, so the key holder can count contributors and check their sum without their ciphertexts.
"""

from __future__ import annotations

import hashlib
import struct

KEY_ID_BYTES = 32


def key_id(public_key: bytes) -> bytes:
    """Names one key pair: SHA-256 of the serialized CKKS public key."""
    return hashlib.sha256(b"secagg/ckks-key-id/v1" + bytes(public_key)).digest()


def contribution_digest(ciphertexts: list[bytes] | tuple[bytes, ...]) -> bytes:
    h = hashlib.sha256(b"secagg/ckks-ciphertexts/v1")
    for c in ciphertexts:
        h.update(struct.pack(">I", len(c)) + bytes(c))
    return h.digest()


def contribution_payload(key: bytes, session: bytes, round: int, client: int, length: int, digest: bytes) -> bytes:
    return b"secagg/ckks-contribution/v2" + key + session + struct.pack(">III", round, client, length) + digest


def sketch_payload(key: bytes, session: bytes, round: int, client: int, length: int, digest: bytes, rho: bytes,
                   sketch: tuple[int, ...] | list[int]) -> bytes:
    """A client's answer to challenge ``rho``: its sketch of the upload named by ``digest``
    (see :mod:`secagg.ckks.sketch`)."""
    head = b"secagg/ckks-sketch/v1" + key + session + struct.pack(">III", round, client, length) + digest + rho
    return head + struct.pack(f">I{len(sketch)}Q", len(sketch), *sketch)


def public_key_payload(public_key: bytes) -> bytes:
    """What the key holder signs with its identity key so that clients encrypt to it and nobody else."""
    return b"secagg/ckks-public-key/v1" + key_id(public_key)
