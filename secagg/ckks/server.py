"""The CKKS aggregator's session: it adds the uploads it cannot decrypt, challenges their senders to sketch
them, and asks the key holder to decrypt the sum, sending it the sum and the signed sketches only.

Stage 0 collects ``CKKS_UPDATE`` messages: each is fully checked (signature, SEAL validation) so that a bad
client is rejected alone, then added to the running sum; its bytes wait on disk (:mod:`secagg.ckks.spool`),
not in memory, in case it must be taken out of the sum again. Closing it sends every contributor a
``CKKS_CHALLENGE`` (body ``rho[32]``, see :mod:`secagg.ckks.sketch`). Stage 1 collects ``CKKS_SKETCH``
answers (body ``rho[32]``, ``u32 k``, ``k x u64`` sketch, ``signature[64]``), each signature checked on
arrival. Closing it checks the sum of the sketches against the aggregate's own sketch; on a mismatch it
sketches each upload to find who lied. If every contributor answered truthfully, the round is finished.
Otherwise (a dropout at the challenge, a refused or false sketch) the aggregator subtracts the missing
uploads and challenges the rest once more (stage 2), provided at least ``min_clients`` remain; a second
shortfall aborts the round with :class:`AggregationAborted`. A client answers at most two challenges per
round (see :mod:`secagg.ckks.protocol`).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import tenseal.sealapi as seal

from secagg.aggregation import AggregateResult, RoundContext
from secagg.ckks import seal_io, sketch
from secagg.ckks.spool import UploadSpool
from secagg.ckks.bounds import check_release
from secagg.ckks.decryption_wire import request_size
from secagg.ckks.packing import PublicContext
from secagg.ckks.request import DecryptionRequest, Release, SignedSketch
from secagg.ckks.signing import contribution_digest, contribution_payload, sketch_payload
from secagg.envelopes import open_envelope, seal_envelope
from secagg.errors import AggregationAborted, MessageError, ProtocolError, SecAggError
from secagg.primitives.keys import SIGNATURE_BYTES, verify_signature
from secagg.wire import SERVER_ID, BodyReader, BodyWriter, MessageKind

MAX_CHALLENGES = 2  # the first challenge and one re-challenge after dropouts or false sketches


class KeyHolderPort(Protocol):
    """Whatever answers decryption requests: the :class:`KeyHolder` itself, or a proxy to it on another machine."""

    def decrypt(self, request: DecryptionRequest) -> Release: ...


@dataclass(frozen=True)
class _Upload:
    digest: bytes
    signature: bytes


def encode_sketch(ctx: RoundContext, client: int, rho: bytes, values: tuple[int, ...], signature: bytes) -> bytes:
    body = BodyWriter().raw(rho).u32(len(values)).raw(struct.pack(f">{len(values)}Q", *values)).raw(signature)
    return seal_envelope(ctx, client, MessageKind.CKKS_SKETCH, body.to_bytes())


class CKKSServer:
    """The aggregator: checks the uploads it cannot decrypt and asks the key holder for their sum only."""

    def __init__(self, ctx: RoundContext, public: PublicContext, directory: dict[int, bytes],
                 key_holder: KeyHolderPort) -> None:
        public.params.check_clients(len(ctx.clients))
        self.ctx, self.public, self.directory, self.key_holder = ctx, public, directory, key_holder
        self._count = public.ciphertexts_for(ctx.dimension + 1)
        self._rows = sketch.rows_for(public.modulus)
        self._uploads: dict[int, _Upload] = {}
        self._blobs = UploadSpool()  # the individual uploads, on disk until the round ends
        self._total: list[seal.Ciphertext] | None = None
        self._stage = 0
        self._record: tuple[int, ...] = ()  # who the current challenge names
        self._aggregate: tuple[bytes, ...] = ()
        self._rho = b""
        self._sketches: dict[int, tuple[tuple[int, ...], bytes]] = {}
        self._aborted: str | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def collect(self, sender: int, message: bytes) -> None:
        if self._finished:
            raise ProtocolError("round already closed")
        if self._stage == 0:
            self._collect_upload(sender, message)
        else:
            self._collect_sketch(sender, message)

    def _collect_upload(self, sender: int, message: bytes) -> None:
        if sender not in self.ctx.clients:
            raise ProtocolError(f"client {sender} is not a participant of round {self.ctx.round}")
        if sender in self._uploads:
            raise ProtocolError(f"duplicate update from client {sender}")
        body = open_envelope(self.ctx, message, MessageKind.CKKS_UPDATE, sender=sender,
                             max_body=self._count * (seal_io.MAX_CIPHERTEXT_BYTES + 4) + 128)
        reader = BodyReader(body)
        n = reader.count(max_count=self._count)
        if n != self._count:
            raise MessageError(f"{n} ciphertexts, expected {self._count}")
        blobs = tuple(reader.blob(max_len=seal_io.MAX_CIPHERTEXT_BYTES) for _ in range(n))
        signature = reader.raw(SIGNATURE_BYTES)
        reader.finish()
        digest = contribution_digest(blobs)
        public_key = self.directory.get(sender)
        if public_key is None:
            raise ProtocolError(f"client {sender} is not enrolled")
        verify_signature(public_key, signature, contribution_payload(*self._head(sender, digest)))
        ciphers = self.public.load_upload(blobs, self.ctx.dimension + 1)  # fully validated: a bad one is its fault
        self._blobs.put(sender, blobs)  # before the sum: a refused write leaves nothing of this upload behind
        if self._total is None:
            self._total = ciphers
        else:
            for acc, c in zip(self._total, ciphers):
                self.public.add_inplace(acc, c)
        self._uploads[sender] = _Upload(digest, signature)

    def _collect_sketch(self, sender: int, message: bytes) -> None:
        if sender not in self._record:
            raise ProtocolError(f"client {sender} was not challenged in round {self.ctx.round}")
        if sender in self._sketches:
            raise ProtocolError(f"duplicate sketch from client {sender}")
        reader = BodyReader(open_envelope(self.ctx, message, MessageKind.CKKS_SKETCH, sender=sender,
                                          max_body=sketch.CHALLENGE_BYTES + 4 + 8 * self._rows + SIGNATURE_BYTES))
        rho = reader.raw(sketch.CHALLENGE_BYTES)
        if reader.count(max_count=self._rows) != self._rows:
            raise MessageError(f"a sketch of other than {self._rows} rows")
        values = struct.unpack(f">{self._rows}Q", reader.raw(8 * self._rows))
        signature = reader.raw(SIGNATURE_BYTES)
        reader.finish()
        if rho != self._rho:
            raise ProtocolError(f"client {sender} answered another challenge")
        if any(v >= self.public.modulus for v in values):
            raise MessageError("a sketch value is not a residue mod q0")
        payload = sketch_payload(*self._head(sender, self._uploads[sender].digest), rho, values)
        verify_signature(self.directory[sender], signature, payload)
        self._sketches[sender] = (values, signature)

    def close_stage(self) -> dict[int, bytes]:
        if self._finished:
            return {}
        if self._stage == 0:
            return self._challenge(tuple(sorted(self._uploads)))
        answered = [c for c in self._record if c in self._sketches]
        self._remove([c for c in self._record if c not in self._sketches])
        if not self._sketches_add_up(answered):  # by linearity the same rho checks the smaller sum
            truthful = self._truthful(answered)
            self._remove([c for c in answered if c not in truthful])
            answered = truthful
        if len(answered) == len(self._record):
            self._finished = True
            self._blobs.close()
            return {}
        if self._stage >= MAX_CHALLENGES:
            missing = [c for c in self._record if c not in answered]
            return self._abort(f"clients {missing} did not answer the last challenge (or not truthfully): "
                               f"a challenge is re-sent once")
        return self._challenge(tuple(answered))

    def _remove(self, clients: list[int]) -> None:
        """Take these clients' uploads out of the running sum."""
        for c in clients:
            upload = self.public.load_upload(self._blobs.get(c), self.ctx.dimension + 1)
            for acc, cipher in zip(self._total or [], upload):
                self.public.sub_inplace(acc, cipher)

    def _challenge(self, record: tuple[int, ...]) -> dict[int, bytes]:
        self._stage += 1
        if not record or len(record) < self.ctx.min_clients:
            return self._abort(f"{len(record)} valid updates, fewer than min_clients={self.ctx.min_clients}")
        self._record, self._sketches = record, {}
        self._aggregate = tuple(seal_io.dump(c) for c in self._total or [])
        self._rho = sketch.challenge(self.public.key_id, self.ctx.session, self.ctx.round, self.ctx.dimension + 1,
                                     contribution_digest(self._aggregate),
                                     ((c, self._uploads[c].digest) for c in record))
        message = seal_envelope(self.ctx, SERVER_ID, MessageKind.CKKS_CHALLENGE, self._rho)
        return {c: message for c in record}

    def _abort(self, reason: str) -> dict[int, bytes]:
        self._aborted, self._finished = reason, True
        self._blobs.close()
        return {}

    def _sketches_add_up(self, clients: list[int]) -> bool:
        q = self.public.modulus
        attested = sketch.add((self._sketches[c][0] for c in clients), q, self._rows)
        return attested == sketch.sketch(self._rho, sketch.coefficients(self._total or []), q)

    def _truthful(self, clients: list[int]) -> list[int]:
        """Those whose sketch is their upload's (one sketch per upload: only after a false sum)."""
        q = self.public.modulus
        return [c for c in clients if self._sketches[c][0] == sketch.sketch(
            self._rho, sketch.coefficients(self.public.load_upload(self._blobs.get(c), self.ctx.dimension + 1)), q)]

    def _head(self, client: int, digest: bytes) -> tuple[bytes, bytes, int, int, int, bytes]:
        return self.public.key_id, self.ctx.session, self.ctx.round, client, self.ctx.dimension + 1, digest

    def request(self) -> DecryptionRequest:
        """What the key holder gets: the aggregate and the signed record, no client's ciphertext."""
        contributions = tuple(SignedSketch(c, self._uploads[c].digest, self._uploads[c].signature,
                                           *self._sketches[c]) for c in self._record)
        return DecryptionRequest(self.ctx.session, self.ctx.round, self.public.key_id, self.ctx.dimension + 1,
                                 self._aggregate, contributions)

    def result(self) -> AggregateResult:
        if not self._finished:
            raise ProtocolError("result requested before the round closed")
        if self._aborted is not None:
            raise AggregationAborted(self._aborted)
        request = self.request()
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
        return AggregateResult(mean, release.weight * self.public.params.max_weight, self._record,
                               details={"ciphertexts_per_client": float(self._count),
                                        "challenges": float(self._stage),
                                        "key_holder_seconds": key_holder_seconds,
                                        "key_holder_bytes": float(request_size(request))})
