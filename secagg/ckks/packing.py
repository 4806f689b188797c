"""Packing real vectors into CKKS ciphertexts, two reals per complex slot.

A vector of L reals is padded to a multiple of N (the ring degree) and cut into rows of N; row r is encoded
as the N/2 complex numbers ``row[:N/2] + 1j * row[N/2:]`` with SEAL's CKKS encoder, which halves the
ciphertexts of real-only packing.
"""

from __future__ import annotations

import math

import numpy as np
import tenseal.sealapi as seal

from secagg.ckks import seal_io
from secagg.ckks.params import CKKSParams


class PublicContext:
    """What clients and the aggregator hold: the parameters and the key holder's public key, never a secret key."""

    def __init__(self, params: CKKSParams, public_key: bytes) -> None:
        self.params = params
        self.context = params.context()
        self.public_key_bytes = bytes(public_key)
        self.public_key = seal_io.load(seal.PublicKey, public_key, self.context, what="public key")
        self.encoder = seal.CKKSEncoder(self.context)
        self.encryptor = seal.Encryptor(self.context, self.public_key)
        self.evaluator = seal.Evaluator(self.context)

    def ciphertexts_for(self, reals: int) -> int:
        return math.ceil(reals / self.params.reals_per_ciphertext)

    def encrypt(self, values: np.ndarray) -> list[bytes]:
        """Serialized ciphertexts of ``values`` (float64), two reals per slot."""
        n = self.params.reals_per_ciphertext
        rows = np.zeros((self.ciphertexts_for(len(values)), n))
        rows.reshape(-1)[: len(values)] = values
        out = []
        for row in rows:
            plain = seal.Plaintext()
            self.encoder.encode((row[: n // 2] + 1j * row[n // 2 :]).tolist(), self.params.scale, plain)
            cipher = seal.Ciphertext(self.context)
            self.encryptor.encrypt(plain, cipher)
            out.append(seal_io.dump(cipher))
        return out

    def load(self, data: bytes) -> seal.Ciphertext:
        """A ciphertext from untrusted bytes: SEAL-validated, fresh (size 2) and at the expected scale."""
        cipher = seal_io.load(seal.Ciphertext, data, self.context, what="ciphertext")
        if cipher.size() != 2 or cipher.parms_id() != self.context.first_parms_id():
            raise seal_io.MessageError("ciphertext is not a fresh ciphertext of this context")
        if not math.isclose(cipher.scale, self.params.scale, rel_tol=1e-9):
            raise seal_io.MessageError(f"ciphertext scale {cipher.scale} differs from {self.params.scale}")
        return cipher


def unpack(decoded: list[np.ndarray], length: int) -> np.ndarray:
    """The first ``length`` reals of decoded complex rows (inverse of the packing above)."""
    rows = [np.concatenate([d.real, d.imag]) for d in decoded]
    return np.concatenate(rows)[:length]
