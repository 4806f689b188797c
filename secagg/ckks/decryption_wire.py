"""The aggregator <-> key holder messages, for a key holder that runs as its own party on another machine.

``CKKS_DECRYPT_REQUEST`` (aggregator -> key holder, sender ``SERVER_ID``) body, format 3: ``u8 3``,
``key_id[32]``, ``u32 length`` (reals), ``u32 n``, ``n x blob`` ciphertexts of the aggregate, ``u32 k``
(sketch rows), ``u32 m``, then ``m x (u32 client, digest[32], update signature[64], k x u64 sketch,
sketch signature[64])``. No client's ciphertext travels to the key holder. Formats 1 and 2 are refused.
``CKKS_RELEASE`` (key holder -> aggregator) body: ``array<f8>[length - 1]`` flooded weighted sum, ``f64``
total weight fraction. Both carry the round's session and round index in the envelope.
"""

from __future__ import annotations

import struct

import numpy as np

from secagg.ckks.request import DecryptionRequest, Release, SignedSketch
from secagg.ckks.seal_io import MAX_CIPHERTEXT_BYTES
from secagg.ckks.signing import KEY_ID_BYTES
from secagg.errors import MessageError
from secagg.primitives.keys import SIGNATURE_BYTES
from secagg.wire import HEADER_BYTES, SERVER_ID, BodyReader, BodyWriter, Envelope, MessageKind

KEY_HOLDER_ID = 0xFFFFFFFE
REQUEST_FORMAT = 3
DIGEST_BYTES = 32
_MAX_CIPHERTEXTS = 1 << 16
_MAX_CONTRIBUTORS = 1 << 20
_MAX_ROWS = 16


def encode_request(request: DecryptionRequest) -> bytes:
    rows = _rows(request)
    body = BodyWriter().u8(REQUEST_FORMAT).raw(request.key_id).u32(request.length).u32(len(request.aggregate))
    for blob in request.aggregate:
        body.blob(blob)
    body.u32(rows).u32(len(request.contributions))
    for c in request.contributions:
        body.u32(c.client).raw(c.digest).raw(c.update_signature).raw(struct.pack(f">{rows}Q", *c.sketch))
        body.raw(c.sketch_signature)
    return Envelope(MessageKind.CKKS_DECRYPT_REQUEST, request.session, request.round, SERVER_ID,
                    body.to_bytes()).to_bytes()


def request_size(request: DecryptionRequest) -> int:
    """Bytes of :func:`encode_request`'s message, without building it."""
    per = 4 + DIGEST_BYTES + 2 * SIGNATURE_BYTES + 8 * _rows(request)
    aggregate = sum(4 + len(b) for b in request.aggregate)
    return HEADER_BYTES + 1 + KEY_ID_BYTES + 8 + aggregate + 8 + per * len(request.contributions)


def decode_request(message: bytes) -> DecryptionRequest:
    env = Envelope.from_bytes(message).expect(MessageKind.CKKS_DECRYPT_REQUEST)
    if env.sender != SERVER_ID:
        raise MessageError(f"decryption request from {env.sender}, not from the aggregator")
    r = BodyReader(env.body)
    if (fmt := r.u8()) != REQUEST_FORMAT:
        raise MessageError(f"decryption request of format {fmt}, expected {REQUEST_FORMAT}")
    key_id, length = r.raw(KEY_ID_BYTES), r.u32()
    if length < 2:
        raise MessageError(f"a decryption request for {length} reals: an aggregate is an update and a weight")
    aggregate = tuple(r.blob(max_len=MAX_CIPHERTEXT_BYTES) for _ in range(r.count(max_count=_MAX_CIPHERTEXTS)))
    rows = r.count(max_count=_MAX_ROWS)
    contributions = tuple(_contribution(r, rows) for _ in range(r.count(max_count=_MAX_CONTRIBUTORS)))
    r.finish()
    return DecryptionRequest(bytes(env.session), env.round, key_id, length, aggregate, contributions)


def _contribution(r: BodyReader, rows: int) -> SignedSketch:
    client, digest, update_signature = r.u32(), r.raw(DIGEST_BYTES), r.raw(SIGNATURE_BYTES)
    sketch = struct.unpack(f">{rows}Q", r.raw(8 * rows))
    return SignedSketch(client, digest, update_signature, sketch, r.raw(SIGNATURE_BYTES))


def _rows(request: DecryptionRequest) -> int:
    counts = {len(c.sketch) for c in request.contributions}
    if len(counts) > 1:
        raise MessageError("contributors' sketches have different numbers of rows")
    return counts.pop() if counts else 0


def encode_release(request: DecryptionRequest, release: Release) -> bytes:
    body = BodyWriter().array(np.asarray(release.weighted_sum, dtype=np.float64)).f64(release.weight).to_bytes()
    return Envelope(MessageKind.CKKS_RELEASE, request.session, request.round, KEY_HOLDER_ID, body).to_bytes()


def decode_release(request: DecryptionRequest, message: bytes) -> Release:
    """The key holder's answer to ``request``, checked against it (kind, session, round, length, finiteness)."""
    env = Envelope.from_bytes(message).expect(MessageKind.CKKS_RELEASE)
    if (env.session, env.round, env.sender) != (request.session, request.round, KEY_HOLDER_ID):
        raise MessageError("release does not answer this round's decryption request")
    r = BodyReader(env.body)
    weighted_sum = r.array(dtype="f8", shape=(request.length - 1,))
    weight = r.f64()
    r.finish()
    if not (np.isfinite(weighted_sum).all() and np.isfinite(weight)):
        raise MessageError("released aggregate has NaN or infinite values")
    return Release(weighted_sum, weight)
