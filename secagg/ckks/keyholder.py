"""The key holder: the only party with the CKKS secret key; it decrypts only sums it can check, and never
sees an individual client's ciphertext.

Its single input is a :class:`DecryptionRequest`: the aggregate ciphertexts and, per contributor, the digest
of its upload, its signature over it (Ed25519 over the key id, session, round, client, length and digest),
and its signed linear sketch of that upload under the round's challenge (see :mod:`secagg.ckks.sketch`).
It checks, before it touches the secret key: the request is for its current key, the round comes after the
last it released, at least ``min_clients`` distinct enrolled clients signed both statements for the
challenge it recomputes from the aggregate and the record, the aggregate is a well-formed ciphertext of its
context, and the sketches add up to the aggregate's. Only then does it decrypt (check, then commit).
Whatever an aggregator sends, it therefore decrypts (but with probability <= 2^-128) the sum of the uploads
of enrolled clients to one round, at most once per round. What it releases is range-checked, noise-flooded
and rounded (Li and Micciancio, EUROCRYPT 2021: exact approximate decryptions can reveal the secret key).

Each key holder makes a fresh key pair: one per run (``CKKSAggregator``, or a Flower run's key-holder node).
"""

from __future__ import annotations

import hmac

import numpy as np
import tenseal.sealapi as seal

from secagg.ckks import seal_io, sketch
from secagg.ckks.bounds import check_release
from secagg.ckks.packing import PublicContext
from secagg.ckks.params import CKKSParams
from secagg.ckks.request import DecryptionRequest, Release, SignedSketch
from secagg.ckks.signing import contribution_digest, contribution_payload, sketch_payload
from secagg.errors import AuthenticationError, ConfigurationError, DecryptionRefused, MessageError
from secagg.primitives.keys import verify_signature
from secagg.primitives.noise import secure_gaussian
from secagg.wire import BodyReader, BodyWriter

__all__ = ["DecryptionRequest", "KeyHolder", "Release", "SignedSketch"]

_STATE_FORMAT = 2


class KeyHolder:
    def __init__(self, params: CKKSParams, directory: dict[int, bytes], *, min_clients: int = 2) -> None:
        context = params.context()
        keygen = seal.KeyGenerator(context)
        public_key = seal.PublicKey()
        keygen.create_public_key(public_key)
        self._setup(params, directory, min_clients, context, keygen.secret_key(), seal_io.dump(public_key), None)

    def _setup(self, params: CKKSParams, directory: dict[int, bytes], min_clients: int, context: seal.SEALContext,
               secret: seal.SecretKey, public_key: bytes, last_released: int | None) -> None:
        if min_clients < 2:
            raise DecryptionRefused("a key holder that decrypts a single contribution protects nothing")
        self.params, self.directory, self.min_clients = params, directory, min_clients
        self._context = context
        self.__secret_key = secret
        self.public_key = public_key
        self._public = PublicContext(params, public_key)
        self.key_id = self._public.key_id
        self._decryptor = seal.Decryptor(context, secret)
        self._last_released = last_released

    def suspend(self) -> bytes:
        """The key pair and the last round released, for the key holder's own storage only."""
        w = BodyWriter().u8(_STATE_FORMAT).blob(seal_io.dump(self.__secret_key)).blob(self.public_key)
        return w.u8(self._last_released is not None).u32(self._last_released or 0).to_bytes()

    @classmethod
    def resume(cls, state: bytes, params: CKKSParams, directory: dict[int, bytes], *,
               min_clients: int = 2) -> KeyHolder:
        """The key holder :meth:`suspend` saved (same parameters): same key pair, same rounds spent."""
        self = cls.__new__(cls)
        context = params.context()
        reader = BodyReader(state)
        if reader.u8() != _STATE_FORMAT:
            raise MessageError("key holder state of another format")
        secret = seal_io.load(seal.SecretKey, reader.blob(), context, what="secret key")
        public_key = reader.blob()
        released, last = reader.u8(), reader.u32()
        reader.finish()
        self._setup(params, directory, min_clients, context, secret, public_key, last if released else None)
        return self

    def decrypt(self, request: DecryptionRequest) -> Release:
        """Check the request, decrypt its aggregate once; the round is spent only when decryption happened."""
        total = self._checked_aggregate(request)
        plains = [self._decrypt(cipher) for cipher in total]
        self._last_released = request.round  # commit: from here on this round (and every earlier one) is spent
        values = self._flood_and_round(self._public.decode(plains, request.length))
        release = Release(values[:-1], float(values[-1]))
        check_release(release, len(request.contributions), self.params)
        return release

    def _checked_aggregate(self, request: DecryptionRequest) -> list[seal.Ciphertext]:
        """The request's aggregate after every check (policy, signatures, sketch); changes no state."""
        if not hmac.compare_digest(request.key_id, self.key_id):
            raise DecryptionRefused("the request is not for this key holder's current key")
        if self._last_released is not None and request.round <= self._last_released:
            raise DecryptionRefused(f"round {request.round} was already decrypted, or a later one "
                                    f"({self._last_released}) was")
        clients = [c.client for c in request.contributions]
        if len(set(clients)) != len(clients):
            raise DecryptionRefused("the request lists a client twice")
        if len(clients) < self.min_clients:
            raise DecryptionRefused(f"{len(clients)} contributors, fewer than min_clients={self.min_clients}")
        try:
            self.params.check_clients(len(clients))
        except ConfigurationError as err:
            raise DecryptionRefused(str(err)) from None
        if request.length < 2:
            raise MessageError(f"a request for {request.length} reals: an aggregate is an update and a weight")
        count = self._public.ciphertexts_for(request.length)
        if len(request.aggregate) != count:
            raise MessageError(f"an aggregate of {len(request.aggregate)} ciphertexts, expected {count} for "
                               f"{request.length} reals")
        rows, q = sketch.rows_for(self._public.modulus), self._public.modulus
        record = ((c.client, c.digest) for c in request.contributions)
        rho = sketch.challenge(self.key_id, request.session, request.round, request.length,
                               contribution_digest(request.aggregate), record)
        for c in request.contributions:  # signatures first: they are cheap, loading and sketching are not
            self._verify(request, c, rho, rows)
        total = [self._public.load_aggregate(blob) for blob in request.aggregate]
        attested = sketch.add((c.sketch for c in request.contributions), q, rows)
        actual = sketch.sketch(rho, sketch.coefficients(total), q)
        if not hmac.compare_digest(_sketch_bytes(attested), _sketch_bytes(actual)):
            raise DecryptionRefused("the aggregate is not the sum of the contributions its sketches attest")
        return total

    def _verify(self, request: DecryptionRequest, contribution: SignedSketch, rho: bytes, rows: int) -> None:
        public = self.directory.get(contribution.client)
        if public is None:
            raise DecryptionRefused(f"client {contribution.client} is not enrolled")
        if len(contribution.sketch) != rows or any(not 0 <= v < self._public.modulus for v in contribution.sketch):
            raise MessageError(f"client {contribution.client}'s sketch is not {rows} residues mod q0")
        head = (self.key_id, request.session, request.round, contribution.client, request.length, contribution.digest)
        try:
            verify_signature(public, contribution.update_signature, contribution_payload(*head))
            verify_signature(public, contribution.sketch_signature, sketch_payload(*head, rho, contribution.sketch))
        except AuthenticationError:
            raise DecryptionRefused(f"contribution of client {contribution.client} is not validly signed") from None

    def _decrypt(self, cipher: seal.Ciphertext) -> seal.Plaintext:
        """Decrypt a sum in coefficient form (SEAL decrypts CKKS in NTT form only: a transformed copy)."""
        plain = seal.Plaintext()
        try:
            ntt = seal.Ciphertext(self._context)
            self._public.evaluator.transform_to_ntt(cipher, ntt)
            self._decryptor.decrypt(ntt, plain)
        except seal_io.SEAL_ERRORS as err:
            raise MessageError(f"SEAL refused to decrypt: {err}") from None
        return plain

    def _flood_and_round(self, values: np.ndarray) -> np.ndarray:
        """Add N(0, 2^-2f) noise, then round to the 2^-r grid (f = flood_bits, r = release_bits)."""
        flooded = values + secure_gaussian(len(values), 2.0**-self.params.flood_bits)
        grid = 2.0**self.params.release_bits
        return np.round(flooded * grid) / grid


def _sketch_bytes(values: tuple[int, ...]) -> bytes:
    return b"".join(v.to_bytes(8, "big") for v in values)
