"""CKKS secure aggregation as sans-I/O sessions: clients encrypt, the aggregator adds, the key holder decrypts
the sum after checking it against the clients' signed sketches.

``CKKS_UPDATE`` (client -> aggregator, stage 0) body: ``u32 n``, ``n x blob`` compact ciphertexts,
``signature[64]`` (Ed25519 over the key id, session, round, client, length and the digest of the
ciphertexts). ``CKKS_CHALLENGE`` (aggregator -> client) body: ``rho[32]``. ``CKKS_SKETCH`` (client ->
aggregator, stage 1, and stage 2 after a re-challenge): see :mod:`secagg.ckks.server`. A client encrypts
``alpha * clip(x)`` and ``alpha = weight / max_weight`` in one more real, so the sum carries the total weight
and the aggregator learns only the weighted mean. The aggregator holds the public context alone; the key
holder never receives an individual client's ciphertext (see :mod:`secagg.ckks.sketch`).
"""

from __future__ import annotations

import math

import numpy as np

from secagg.aggregation import RoundContext
from secagg.ckks import compact, sketch
from secagg.ckks.keyholder import KeyHolder
from secagg.ckks.packing import PublicContext
from secagg.ckks.params import CKKSParams
from secagg.ckks.server import MAX_CHALLENGES, CKKSServer, KeyHolderPort, encode_sketch
from secagg.ckks.signing import KEY_ID_BYTES, contribution_digest, contribution_payload, sketch_payload
from secagg.envelopes import open_envelope, seal_envelope
from secagg.errors import ConfigurationError, MessageError, ProtocolError, UpdateRejected
from secagg.identity import IdentityRegistry
from secagg.primitives.keys import SigningKey
from secagg.primitives.noise import secure_gaussian
from secagg.wire import SERVER_ID, BodyReader, BodyWriter, MessageKind

__all__ = ["CKKSAggregator", "CKKSClient", "CKKSServer", "KeyHolderPort", "weighted_values"]

_STATE_FORMAT = 2  # 1 kept the coefficients instead of the compact upload


def weighted_values(update: np.ndarray, weight: float, params: CKKSParams, dimension: int) -> np.ndarray:
    """``[alpha * clip(x) + noise, alpha]`` with ``alpha = weight / max_weight``, after checking the update; the
    noise, N(0, noise_sigma^2) per coordinate (distributed DP), comes after the clip, which never touches it."""
    if update.shape != (dimension,):
        raise UpdateRejected(f"update of shape {update.shape}, expected ({dimension},)")
    if not np.isfinite(update).all():
        raise UpdateRejected("update has NaN or infinite values")
    if not (math.isfinite(weight) and 0 < weight <= params.max_weight):
        raise UpdateRejected(f"weight {weight} outside (0, max_weight={params.max_weight}]")
    alpha = weight / params.max_weight
    values = np.empty(dimension + 1)
    np.clip(update, -params.clip, params.clip, out=values[:-1])
    values[:-1] *= alpha
    if params.noise_sigma > 0 and dimension:
        values[:-1] += secure_gaussian(dimension, params.noise_sigma)
    values[-1] = alpha
    return values


class CKKSClient:
    """One client's round: upload the signed ciphertexts (stage 0), then answer the aggregator's challenge with a
    signed sketch of them, at most :data:`MAX_CHALLENGES` different challenges per round (the first and one
    re-challenge after dropouts). Answering is harmless: the aggregator holds the ciphertexts and could compute
    any sketch itself, a signed sketch is good only for the aggregate and record its challenge hashes, and the
    key holder decrypts one request per round; the cap keeps the sketches a key holder may see of one upload
    to a few pseudo-uniform values (see :mod:`secagg.ckks.sketch`)."""

    def __init__(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float,
                 public: PublicContext, identity: SigningKey) -> None:
        public.params.check_clients(len(ctx.clients))
        self.ctx, self.id, self.identity = ctx, client_id, identity
        self._key_id, self._modulus, self._length = public.key_id, public.modulus, ctx.dimension + 1
        values = weighted_values(update, weight, public.params, ctx.dimension)
        blobs = public.encrypt(values)
        self._layout, self._blobs = public.layout, tuple(bytes(b) for b in blobs)  # all it keeps of its upload
        self._digest = contribution_digest(blobs)
        signature = identity.sign(contribution_payload(*self._head()))
        body = BodyWriter().u32(len(blobs))
        for b in blobs:
            body.blob(b)
        self._message = seal_envelope(ctx, client_id, MessageKind.CKKS_UPDATE, body.raw(signature).to_bytes())
        self._answers: dict[bytes, bytes] = {}

    def start(self) -> bytes:
        """The upload, handed over once (the session keeps only its compact ciphertexts afterwards)."""
        if not self._message:
            raise ProtocolError("this session's upload was already handed over")
        message, self._message = self._message, b""
        return message

    def handle(self, message: bytes) -> bytes:
        """The signed sketch that answers a ``CKKS_CHALLENGE``; the same challenge gets the same answer."""
        rho = open_envelope(self.ctx, message, MessageKind.CKKS_CHALLENGE, sender=SERVER_ID,
                            max_body=sketch.CHALLENGE_BYTES)
        if len(rho) != sketch.CHALLENGE_BYTES:
            raise MessageError(f"a challenge of {len(rho)} bytes, expected {sketch.CHALLENGE_BYTES}")
        rho = bytes(rho)
        if rho in self._answers:
            return self._answers[rho]
        if len(self._answers) >= MAX_CHALLENGES:
            raise ProtocolError(f"already answered {MAX_CHALLENGES} challenges in round {self.ctx.round}")
        values = sketch.sketch(rho, self._coefficients(), self._modulus)
        signature = self.identity.sign(sketch_payload(*self._head(), rho, values))
        self._answers[rho] = encode_sketch(self.ctx, self.id, rho, values, signature)
        return self._answers[rho]

    def _coefficients(self) -> np.ndarray:
        """What the aggregator adds of this upload (both polynomials of each ciphertext, coefficient form), rebuilt
        from the compact ciphertexts exactly as the aggregator rebuilds them: 7 bytes per parameter kept instead
        of 16."""
        c0, c1 = compact.decompress(self._layout, self._blobs, self._length)
        return np.stack([c0, c1], axis=1).reshape(-1)

    def suspend(self) -> bytes:
        """The session between stages, for the client's own storage: its compact upload, digest and answers
        (the identity key stays the node's)."""
        w = BodyWriter().u8(_STATE_FORMAT).raw(self._key_id).raw(self._digest).u32(self._length)
        w.raw(self._modulus.to_bytes(8, "big")).u32(self._layout.degree).u8(self._layout.c0_drop)
        w.u8(self._layout.c1_drop).u32(len(self._blobs))
        for blob in self._blobs:
            w.blob(blob)
        w.u32(len(self._answers))
        for rho, answer in self._answers.items():
            w.raw(rho).blob(answer)
        return w.to_bytes()

    @classmethod
    def resume(cls, state: bytes, ctx: RoundContext, client_id: int, identity: SigningKey) -> CKKSClient:
        """The session :meth:`suspend` saved; ``ctx`` and ``identity`` must be the ones it was created with."""
        self = cls.__new__(cls)
        self.ctx, self.id, self.identity = ctx, client_id, identity
        r = BodyReader(state)
        if r.u8() != _STATE_FORMAT:
            raise ProtocolError("suspended CKKS session of another format")
        self._key_id, self._digest, self._length = r.raw(KEY_ID_BYTES), r.raw(32), r.u32()
        self._modulus = int.from_bytes(r.raw(8), "big")
        self._layout = compact.Layout(self._modulus, r.u32(), r.u8(), r.u8())
        self._blobs = tuple(bytes(r.blob()) for _ in range(r.u32()))
        self._answers = {r.raw(sketch.CHALLENGE_BYTES): r.blob() for _ in range(r.count(max_count=MAX_CHALLENGES))}
        r.finish()
        self._message = b""
        return self

    def _head(self) -> tuple[bytes, bytes, int, int, int, bytes]:
        return self._key_id, self.ctx.session, self.ctx.round, self.id, self._length, self._digest


class CKKSAggregator:
    """CKKS aggregation with separated roles. In-process it creates the key holder as its own component and
    enrols client identities; the aggregator side keeps only the public context."""

    stages = 2  # the upload and the sketch; a third (the sketch again) only after a dropout at the second

    def __init__(self, params: CKKSParams | None = None, *, min_clients: int = 2) -> None:
        self.params = params or CKKSParams()
        self.identities = IdentityRegistry()
        self.key_holder = KeyHolder(self.params, self.identities.directory, min_clients=min_clients)
        self.public = PublicContext(self.params, self.key_holder.public_key)

    @classmethod
    def with_key_holder(cls, params: CKKSParams, key_holder: KeyHolderPort | None, public_key: bytes,
                        identities: IdentityRegistry) -> CKKSAggregator:
        """The aggregator's side only, for a key holder that is another party (reached through ``key_holder``)
        and clients that keep their own identity keys (registered in ``identities``). A client in a deployment
        makes it without ``key_holder``: it opens client sessions only."""
        self = cls.__new__(cls)
        self.params, self.identities, self.key_holder = params, identities, key_holder
        self.public = PublicContext(params, public_key)
        return self

    def client_session(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> CKKSClient:
        self.identities.enrol(ctx.clients)
        return CKKSClient(ctx, client_id, update, weight, self.public, self.identities.signing_key(client_id))

    def resume_client_session(self, ctx: RoundContext, client_id: int, state: bytes) -> CKKSClient:
        """The session :meth:`client_session` opened and the client suspended between stages (its own bytes)."""
        return CKKSClient.resume(state, ctx, client_id, self.identities.signing_key(client_id))

    def server_session(self, ctx: RoundContext) -> CKKSServer:
        if self.key_holder is None:
            raise ConfigurationError("this CKKS aggregator reaches no key holder: it opens client sessions only")
        self.identities.enrol(ctx.clients)
        return CKKSServer(ctx, self.public, self.identities.directory, self.key_holder)
