"""CKKS secure aggregation as sans-I/O sessions: clients encrypt, the key holder adds and decrypts.

``CKKS_UPDATE`` (client -> aggregator) body: ``u32 n``, ``n x blob`` SEAL ciphertexts, ``signature[64]``
(Ed25519 over the key id, round, client, length and the digest of the ciphertexts). A client encrypts
``alpha * clip(x)`` and ``alpha = weight / max_weight`` in one more real, so the sum carries the total weight
and the aggregator learns only the weighted mean. The aggregator holds the public context alone: it checks
each update (signature, full ciphertext validation) so that a bad client is rejected alone, and forwards the
valid ones, signatures and all, to the key holder, which re-checks and sums them itself.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import numpy as np

from secagg.aggregation import AggregateResult, RoundContext
from secagg.ckks import seal_io
from secagg.ckks.decryption_wire import request_size
from secagg.ckks.bounds import check_release
from secagg.ckks.keyholder import KeyHolder
from secagg.ckks.packing import PublicContext
from secagg.ckks.params import CKKSParams
from secagg.ckks.request import DecryptionRequest, Release, SignedContribution
from secagg.ckks.signing import contribution_digest, contribution_payload
from secagg.envelopes import open_envelope, seal_envelope
from secagg.errors import AggregationAborted, ProtocolError, SecAggError, UpdateRejected
from secagg.identity import IdentityRegistry
from secagg.primitives.keys import SIGNATURE_BYTES, SigningKey, verify_signature
from secagg.wire import BodyReader, BodyWriter, MessageKind


def weighted_values(update: np.ndarray, weight: float, params: CKKSParams, dimension: int) -> np.ndarray:
    """``[alpha * clip(x), alpha]`` with ``alpha = weight / max_weight``, after checking the update."""
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
    values[-1] = alpha
    return values


class CKKSClient:
    def __init__(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float,
                 public: PublicContext, identity: SigningKey) -> None:
        public.params.check_clients(len(ctx.clients))
        ciphertexts = public.encrypt(weighted_values(update, weight, public.params, ctx.dimension))
        digest = contribution_digest(ciphertexts)
        signature = identity.sign(contribution_payload(public.key_id, ctx.session, ctx.round, client_id,
                                                       ctx.dimension + 1, digest))
        body = BodyWriter().u32(len(ciphertexts))
        for c in ciphertexts:
            body.blob(c)
        self._message = seal_envelope(ctx, client_id, MessageKind.CKKS_UPDATE, body.raw(signature).to_bytes())

    def start(self) -> bytes:
        return self._message

    def handle(self, message: bytes) -> bytes:
        raise ProtocolError("CKKS aggregation has a single stage")


class KeyHolderPort(Protocol):
    """Whatever answers decryption requests: the :class:`KeyHolder` itself, or a proxy to it on another machine."""

    def decrypt(self, request: DecryptionRequest) -> Release: ...


class CKKSServer:
    """The aggregator: checks the updates it cannot decrypt and asks the key holder for their sum only."""

    def __init__(self, ctx: RoundContext, public: PublicContext, directory: dict[int, bytes],
                 key_holder: KeyHolderPort) -> None:
        public.params.check_clients(len(ctx.clients))
        self.ctx, self.public, self.directory, self.key_holder = ctx, public, directory, key_holder
        self._count = public.ciphertexts_for(ctx.dimension + 1)
        self._record: list[SignedContribution] = []
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def collect(self, sender: int, message: bytes) -> None:
        if self._finished:
            raise ProtocolError("round already closed")
        if sender not in self.ctx.clients:
            raise ProtocolError(f"client {sender} is not a participant of round {self.ctx.round}")
        if any(c.client == sender for c in self._record):
            raise ProtocolError(f"duplicate update from client {sender}")
        body = open_envelope(self.ctx, message, MessageKind.CKKS_UPDATE, sender=sender,
                             max_body=self._count * (seal_io.MAX_CIPHERTEXT_BYTES + 4) + 128)
        reader = BodyReader(body)
        n = reader.count(max_count=self._count)
        if n != self._count:
            raise seal_io.MessageError(f"{n} ciphertexts, expected {self._count}")
        blobs = [reader.blob(max_len=seal_io.MAX_CIPHERTEXT_BYTES) for _ in range(n)]
        signature = reader.raw(SIGNATURE_BYTES)
        reader.finish()
        digest = contribution_digest(blobs)
        public_key = self.directory.get(sender)
        if public_key is None:
            raise ProtocolError(f"client {sender} is not enrolled")
        verify_signature(public_key, signature, contribution_payload(
            self.public.key_id, self.ctx.session, self.ctx.round, sender, self.ctx.dimension + 1, digest))
        for b in blobs:  # fully validated here, so that a bad update is this client's fault alone
            self.public.load(b)
        self._record.append(SignedContribution(sender, tuple(blobs), signature))

    def close_stage(self) -> dict[int, bytes]:
        self._finished = True
        return {}

    def result(self) -> AggregateResult:
        if not self._finished:
            raise ProtocolError("result requested before the round closed")
        if not self._record or len(self._record) < self.ctx.min_clients:
            raise AggregationAborted(f"{len(self._record)} valid updates, fewer than min_clients={self.ctx.min_clients}")
        request = DecryptionRequest(self.ctx.session, self.ctx.round, self.public.key_id, self.ctx.dimension + 1,
                                    tuple(self._record))
        started = time.perf_counter()
        try:
            release = self.key_holder.decrypt(request)
        except AggregationAborted:
            raise
        except SecAggError as err:
            raise AggregationAborted(f"key holder refused: {type(err).__name__}: {err}") from None
        key_holder_seconds = time.perf_counter() - started
        check_release(release, len(self._record), self.public.params)  # also against a remote key holder
        mean = (release.weighted_sum / release.weight).astype(np.float32)
        return AggregateResult(mean, release.weight * self.public.params.max_weight,
                               tuple(sorted(c.client for c in self._record)),
                               details={"ciphertexts_per_client": float(self._count),
                                        "key_holder_seconds": key_holder_seconds,
                                        "key_holder_bytes": float(request_size(request))})


class CKKSAggregator:
    """CKKS aggregation with separated roles. In-process it creates the key holder as its own component and
    enrols client identities; the aggregator side keeps only the public context."""

    stages = 1

    def __init__(self, params: CKKSParams | None = None, *, min_clients: int = 2) -> None:
        self.params = params or CKKSParams()
        self.identities = IdentityRegistry()
        self.key_holder = KeyHolder(self.params, self.identities.directory, min_clients=min_clients)
        self.public = PublicContext(self.params, self.key_holder.public_key)

    @classmethod
    def with_key_holder(cls, params: CKKSParams, key_holder: KeyHolderPort, public_key: bytes,
                        identities: IdentityRegistry) -> CKKSAggregator:
        """The aggregator's side only, for a key holder that is another party (reached through ``key_holder``)
        and clients that keep their own identity keys (registered in ``identities``)."""
        self = cls.__new__(cls)
        self.params, self.identities, self.key_holder = params, identities, key_holder
        self.public = PublicContext(params, public_key)
        return self

    def client_session(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> CKKSClient:
        self.identities.enrol(ctx.clients)
        return CKKSClient(ctx, client_id, update, weight, self.public, self.identities.signing_key(client_id))

    def server_session(self, ctx: RoundContext) -> CKKSServer:
        self.identities.enrol(ctx.clients)
        return CKKSServer(ctx, self.public, self.identities.directory, self.key_holder)
