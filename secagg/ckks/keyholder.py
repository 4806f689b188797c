"""The key holder: the only party with the CKKS secret key, and it decrypts only signed aggregates.

Its single input is a :class:`DecryptionRequest`: the summed ciphertexts of one round and the record of who
contributed, each contribution signed by its client (Ed25519 over the round and a digest of its
ciphertexts). It refuses fewer than ``min_clients`` distinct valid contributors, a second request for the
same round, and ciphertexts that do not belong to its context. What it releases is noise-flooded and
rounded (Li and Micciancio, EUROCRYPT 2021: exact approximate decryptions can reveal the secret key).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from secagg.ckks import seal_io
from secagg.ckks.packing import PublicContext, unpack
from secagg.ckks.params import CKKSParams
from secagg.ckks.signing import contribution_payload
from secagg.errors import AuthenticationError, DecryptionRefused, MessageError
from secagg.primitives.keys import verify_signature
from secagg.primitives.noise import secure_gaussian
from secagg.wire import SESSION_BYTES, BodyReader, BodyWriter


@dataclass(frozen=True)
class Contribution:
    client: int
    digest: bytes
    signature: bytes


@dataclass(frozen=True)
class DecryptionRequest:
    session: bytes
    round: int
    length: int  # reals in the aggregate: the update dimension plus the weight
    ciphertexts: tuple[bytes, ...]
    record: tuple[Contribution, ...]


@dataclass(frozen=True)
class Release:
    """The released weighted sum (flooded, rounded) and total weight fraction."""

    weighted_sum: np.ndarray
    weight: float


class KeyHolder:
    def __init__(self, params: CKKSParams, directory: dict[int, bytes], *, min_clients: int = 2) -> None:
        if min_clients < 2:
            raise DecryptionRefused("a key holder that decrypts a single contribution protects nothing")
        self.params, self.directory, self.min_clients = params, directory, min_clients
        self._context = params.context()
        self._keygen(seal.KeyGenerator(self._context))
        self._decrypted: set[tuple[bytes, int]] = set()

    def _keygen(self, keygen: seal.KeyGenerator) -> None:
        self.__secret_key = keygen.secret_key()
        public_key = seal.PublicKey()
        keygen.create_public_key(public_key)
        self.public_key = seal_io.dump(public_key)
        self._public = PublicContext(self.params, self.public_key)
        self._decryptor = seal.Decryptor(self._context, self.__secret_key)

    def suspend(self) -> bytes:
        """The secret key and the rounds already decrypted, for the key holder's own storage only."""
        w = BodyWriter().blob(seal_io.dump(self.__secret_key)).u32(len(self._decrypted))
        for session, round_index in sorted(self._decrypted):
            w.raw(session).u32(round_index)
        return w.to_bytes()

    @classmethod
    def resume(cls, state: bytes, params: CKKSParams, directory: dict[int, bytes], *,
               min_clients: int = 2) -> KeyHolder:
        """The key holder :meth:`suspend` saved (same parameters); a new public key is derived from its secret."""
        self = cls.__new__(cls)
        self.params, self.directory, self.min_clients = params, directory, min_clients
        self._context = params.context()
        reader = BodyReader(state)
        secret = seal_io.load(seal.SecretKey, reader.blob(), self._context, what="secret key")
        self._keygen(seal.KeyGenerator(self._context, secret))
        self._decrypted = {(reader.raw(SESSION_BYTES), reader.u32())
                           for _ in range(reader.count(max_count=1 << 24))}
        reader.finish()
        return self

    def decrypt(self, request: DecryptionRequest) -> Release:
        self._check_policy(request)
        ciphertexts = [self._public.load(c) for c in request.ciphertexts]
        if len(ciphertexts) != self._public.ciphertexts_for(request.length):
            raise MessageError(f"{len(ciphertexts)} ciphertexts for {request.length} reals")
        self._decrypted.add((request.session, request.round))
        decoded = []
        for cipher in ciphertexts:
            plain = seal.Plaintext()
            self._decryptor.decrypt(cipher, plain)
            decoded.append(np.asarray(self._public.encoder.decode_complex(plain)))
        values = self._flood_and_round(unpack(decoded, request.length))
        return Release(values[:-1], float(values[-1]))

    def _check_policy(self, request: DecryptionRequest) -> None:
        if (request.session, request.round) in self._decrypted:
            raise DecryptionRefused(f"round {request.round} was already decrypted")
        clients = [c.client for c in request.record]
        if len(set(clients)) != len(clients):
            raise DecryptionRefused("the aggregation record lists a client twice")
        if len(clients) < self.min_clients:
            raise DecryptionRefused(f"{len(clients)} contributors, fewer than min_clients={self.min_clients}")
        for c in request.record:
            public = self.directory.get(c.client)
            if public is None:
                raise DecryptionRefused(f"client {c.client} is not enrolled")
            try:
                verify_signature(public, c.signature,
                                 contribution_payload(request.session, request.round, c.client, c.digest))
            except AuthenticationError:
                raise DecryptionRefused(f"contribution of client {c.client} is not validly signed") from None

    def _flood_and_round(self, values: np.ndarray) -> np.ndarray:
        """Add N(0, 2^-2f) noise, then round to the 2^-r grid (f = flood_bits, r = release_bits)."""
        flooded = values + secure_gaussian(len(values), 2.0**-self.params.flood_bits)
        grid = 2.0**self.params.release_bits
        return np.round(flooded * grid) / grid
