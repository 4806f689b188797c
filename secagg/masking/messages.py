"""Bodies of the pairwise-masking messages (envelopes as in :mod:`secagg.wire`).

| kind | direction | body |
|---|---|---|
| MASK_ADVERTISE | client -> server | c_pk[32] s_pk[32] blob commitment, blob signature (both empty without consistency check) |
| MASK_KEY_LIST | server -> client | u32 n, u8 signed, n x (u32 id, c_pk[32], s_pk[32], commitment[32] signature[64] if signed) |
| MASK_REVEAL | client -> server | r[32], the value the client committed to (consistency check only) |
| MASK_REVEAL_LIST | server -> client | u32 n, n x (u32 id, r[32]): every listed client's reveal, in id order |
| MASK_SHARES | client -> server | u32 n, n x (u32 recipient, blob AES-GCM ciphertext) |
| MASK_SHARE_RELAY | server -> client | u32 n, n x (u32 sender, blob AES-GCM ciphertext) |
| MASK_INPUT | client -> server | array u32 or u64 [dimension + 1] masked encoding |
| MASK_CONSISTENCY_REQUEST | server -> client | u32 n, n x u32 survivor id |
| MASK_CONSISTENCY_SIGNATURE | client -> server | signature[64] over the survivor list |
| MASK_UNMASK_REQUEST | server -> client | u32 n, n x u32 survivor id; u32 m, m x (u32 id, signature[64]) |
| MASK_UNMASK_SHARES | client -> server | u32 n, n x (u32 owner, u8 kind, share[36]) |

A share ciphertext decrypts to ``u32 owner, u32 holder, share of s_sk [36], share of b [36]``.

Everything a client computes from the set-up is bound to one *transcript digest* T (:func:`transcript_digest`):
the round context, the key list exactly as broadcast and, with the consistency check, every reveal. T seeds
the SecAgg+ graph, is the associated data of every share ciphertext and is part of every survivor-list
signature, so two clients shown different lists cannot exchange a share that decrypts.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass

import numpy as np

from secagg.aggregation import RoundContext
from secagg.errors import MessageError
from secagg.primitives.keys import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from secagg.primitives.shamir import SHARE_BYTES
from secagg.wire import BodyReader, BodyWriter

MAX_PARTIES = 1 << 20
MAX_CIPHERTEXT = 512
REVEAL_BYTES = 32
DIGEST_BYTES = 32
_SHARE_PLAINTEXT = struct.Struct(">II")


class ShareKind(enum.IntEnum):
    SELF_MASK_SEED = 0  # b_u: revealed for survivors
    MASK_KEY = 1  # s_u secret key: revealed for clients that dropped before sending their input


@dataclass(frozen=True)
class Advertisement:
    """A client's two public keys; with the consistency check also its commitment and signature."""

    client: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes = b""
    commitment: bytes = b""


def commitment_of(session: bytes, round: int, client: int, reveal: bytes) -> bytes:
    """The hash a client advertises before the key list is fixed, and opens with ``reveal`` after."""
    return hashlib.sha256(b"secagg/graph-commit/v1" + session + struct.pack(">II", round, client) + reveal).digest()


def advertisement_payload(session: bytes, round: int, client: int, c_pk: bytes, s_pk: bytes,
                          commitment: bytes = b"") -> bytes:
    """What a client signs when it advertises its keys (and its commitment)."""
    return b"secagg/advertise/v2" + session + struct.pack(">II", round, client) + c_pk + s_pk + commitment


def transcript_digest(ctx: RoundContext, key_list: bytes, reveals: bytes = b"") -> bytes:
    """T: SHA-256 over the round context, the key list as broadcast and the reveal list (if any)."""
    h = hashlib.sha256(b"secagg/transcript/v1" + ctx.session)
    h.update(struct.pack(f">IQII{len(ctx.clients)}I", ctx.round, ctx.dimension, ctx.min_clients,
                         len(ctx.clients), *ctx.clients))
    for part in (key_list, reveals):
        h.update(struct.pack(">Q", len(part)) + part)
    return h.digest()


def survivors_payload(transcript: bytes, survivors: tuple[int, ...]) -> bytes:
    """What a client signs in the consistency check: the transcript and the survivor list it was shown."""
    return b"secagg/survivors/v2" + transcript + struct.pack(f">I{len(survivors)}I", len(survivors), *survivors)


def share_associated_data(transcript: bytes, owner: int, holder: int) -> bytes:
    """AES-GCM associated data of the shares ``owner`` encrypts for ``holder`` under transcript ``transcript``."""
    return b"secagg/shares/v2" + transcript + struct.pack(">II", owner, holder)


def write_advertise(ad: Advertisement) -> bytes:
    return BodyWriter().raw(ad.c_pk).raw(ad.s_pk).blob(ad.commitment).blob(ad.signature).to_bytes()


def read_advertise(client: int, body: bytes) -> Advertisement:
    r = BodyReader(body)
    c_pk, s_pk = r.raw(PUBLIC_KEY_BYTES), r.raw(PUBLIC_KEY_BYTES)
    commitment, signature = r.blob(max_len=DIGEST_BYTES), r.blob(max_len=SIGNATURE_BYTES)
    r.finish()
    if len(commitment) not in (0, DIGEST_BYTES) or len(signature) not in (0, SIGNATURE_BYTES):
        raise MessageError("advertisement commitment or signature of the wrong length")
    return Advertisement(client, c_pk, s_pk, signature, commitment)


def write_key_list(ads: list[Advertisement]) -> bytes:
    """The key list in increasing id order (the order is part of the format)."""
    signed = any(ad.signature for ad in ads)
    w = BodyWriter().u32(len(ads)).u8(int(signed))
    for ad in sorted(ads, key=lambda a: a.client):
        w.u32(ad.client).raw(ad.c_pk).raw(ad.s_pk)
        if signed:
            if len(ad.signature) != SIGNATURE_BYTES or len(ad.commitment) != DIGEST_BYTES:
                raise MessageError(f"client {ad.client} has no signature or commitment in a signed key list")
            w.raw(ad.commitment).raw(ad.signature)
    return w.to_bytes()


class KeyList:
    """A parsed key list: fixed-size entries read as one NumPy record array, objects made only on demand."""

    def __init__(self, body: bytes) -> None:
        r = BodyReader(body)
        n, signed = r.count(max_count=MAX_PARTIES), r.u8()
        if signed not in (0, 1):
            raise MessageError(f"bad signature flag {signed}")
        fields = [("id", ">u4"), ("c", f"V{PUBLIC_KEY_BYTES}"), ("s", f"V{PUBLIC_KEY_BYTES}")]
        signed_fields = [("commit", f"V{DIGEST_BYTES}"), ("sig", f"V{SIGNATURE_BYTES}")]
        dtype = np.dtype(fields + signed_fields if signed else fields)
        self._entries = np.frombuffer(r.raw(n * dtype.itemsize), dtype=dtype)
        r.finish()
        self.body = bytes(body)
        ids = self._entries["id"]
        if (np.diff(ids.astype(np.int64)) <= 0).any():
            raise MessageError("key list ids are not strictly increasing")
        self.ids: list[int] = ids.tolist()
        self._index = {client: i for i, client in enumerate(self.ids)}
        self.signed = bool(signed)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, client: int) -> bool:
        return client in self._index

    def __getitem__(self, client: int) -> Advertisement:
        e = self._entries[self._index[client]]
        if not self.signed:
            return Advertisement(client, e["c"].tobytes(), e["s"].tobytes())
        return Advertisement(client, e["c"].tobytes(), e["s"].tobytes(), e["sig"].tobytes(), e["commit"].tobytes())

    def public_keys(self) -> list[bytes]:
        return self._entries["c"].tolist() + self._entries["s"].tolist()

    def commitments(self) -> list[bytes]:
        """Every listed commitment, in id order (empty for an unsigned list)."""
        return self._entries["commit"].tolist() if self.signed else []


def write_reveals(reveals: dict[int, bytes]) -> bytes:
    """MASK_REVEAL_LIST: every reveal, in id order."""
    w = BodyWriter().u32(len(reveals))
    for client, reveal in sorted(reveals.items()):
        w.u32(client).raw(reveal)
    return w.to_bytes()


def read_reveals(body: bytes) -> dict[int, bytes]:
    r = BodyReader(body)
    dtype = np.dtype([("id", ">u4"), ("r", f"V{REVEAL_BYTES}")])
    entries = np.frombuffer(r.raw(r.count(max_count=MAX_PARTIES) * dtype.itemsize), dtype=dtype)
    r.finish()
    if (np.diff(entries["id"].astype(np.int64)) <= 0).any():
        raise MessageError("reveal list ids are not strictly increasing")
    return dict(zip(entries["id"].tolist(), entries["r"].tolist()))


def write_addressed(items: list[tuple[int, bytes]]) -> bytes:
    """MASK_SHARES and MASK_SHARE_RELAY: (id, ciphertext) pairs."""
    w = BodyWriter().u32(len(items))
    for party, ciphertext in items:
        w.u32(party).blob(ciphertext)
    return w.to_bytes()


def read_addressed(body: bytes) -> dict[int, bytes]:
    r = BodyReader(body)
    items = [(r.u32(), r.blob(max_len=MAX_CIPHERTEXT)) for _ in range(r.count(max_count=MAX_PARTIES))]
    r.finish()
    out = dict(items)
    if len(out) != len(items):
        raise MessageError("duplicate party in a share message")
    return out


def write_ids(ids: tuple[int, ...]) -> BodyWriter:
    w = BodyWriter().u32(len(ids))
    for i in ids:
        w.u32(i)
    return w


def read_ids(r: BodyReader) -> tuple[int, ...]:
    ids = tuple(np.frombuffer(r.raw(4 * r.count(max_count=MAX_PARTIES)), dtype=">u4").tolist())
    if len(set(ids)) != len(ids):
        raise MessageError("duplicate id in a survivor list")
    return ids


def write_unmask_request(survivors: tuple[int, ...], signatures: dict[int, bytes]) -> bytes:
    w = write_ids(survivors).u32(len(signatures))
    for client, signature in sorted(signatures.items()):
        w.u32(client).raw(signature)
    return w.to_bytes()


def read_unmask_request(body: bytes) -> tuple[tuple[int, ...], dict[int, bytes]]:
    r = BodyReader(body)
    survivors = read_ids(r)
    dtype = np.dtype([("id", ">u4"), ("sig", f"V{SIGNATURE_BYTES}")])
    entries = np.frombuffer(r.raw(r.count(max_count=MAX_PARTIES) * dtype.itemsize), dtype=dtype)
    r.finish()
    signatures = dict(zip(entries["id"].tolist(), entries["sig"].tolist()))
    if len(signatures) != len(entries):
        raise MessageError("duplicate signer")
    return survivors, signatures


def write_unmask_shares(shares: list[tuple[int, ShareKind, bytes]]) -> bytes:
    w = BodyWriter().u32(len(shares))
    for owner, kind, share in shares:
        w.u32(owner).u8(int(kind)).raw(share)
    return w.to_bytes()


def read_unmask_shares(body: bytes) -> dict[int, tuple[ShareKind, bytes]]:
    r = BodyReader(body)
    out: dict[int, tuple[ShareKind, bytes]] = {}
    for _ in range(r.count(max_count=MAX_PARTIES)):
        owner, kind = r.u32(), r.u8()
        if kind not in (0, 1):
            raise MessageError(f"unknown share kind {kind}")
        if owner in out:
            raise MessageError(f"two shares for client {owner}")
        out[owner] = (ShareKind(kind), r.raw(SHARE_BYTES))
    r.finish()
    return out


def pack_share_plaintext(owner: int, holder: int, key_share: bytes, seed_share: bytes) -> bytes:
    return _SHARE_PLAINTEXT.pack(owner, holder) + key_share + seed_share


def unpack_share_plaintext(data: bytes, owner: int, holder: int) -> tuple[bytes, bytes]:
    """The (mask key share, self-mask seed share) after checking the ids inside the ciphertext."""
    if len(data) != _SHARE_PLAINTEXT.size + 2 * SHARE_BYTES:
        raise MessageError("share plaintext of the wrong length")
    if _SHARE_PLAINTEXT.unpack_from(data) != (owner, holder):
        raise MessageError("share addressed to another pair of clients")
    body = data[_SHARE_PLAINTEXT.size:]
    return body[:SHARE_BYTES], body[SHARE_BYTES:]
