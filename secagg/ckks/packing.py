"""Packing real vectors into CKKS ciphertexts, two reals per complex slot, and checking untrusted ones.

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
from secagg.ckks.signing import key_id
from secagg.errors import MessageError


class PublicContext:
    """What clients and the aggregator hold: the parameters and the key holder's public key, never a secret key."""

    def __init__(self, params: CKKSParams, public_key: bytes) -> None:
        self.params = params
        self.context = params.context()
        self.public_key_bytes = bytes(public_key)
        self.key_id = key_id(self.public_key_bytes)
        self.public_key = seal_io.load(seal.PublicKey, public_key, self.context, what="public key")
        self.encoder = seal.CKKSEncoder(self.context)
        self.encryptor = seal.Encryptor(self.context, self.public_key)
        self.evaluator = seal.Evaluator(self.context)
        data = self.context.first_context_data().parms().coeff_modulus()
        if len(data) != 1:
            raise MessageError(f"{len(data)} data primes: ciphertexts must live mod q0 alone")
        self.modulus = data[0].value()  # q0: coefficients of every accepted ciphertext are residues mod q0

    def ciphertexts_for(self, reals: int) -> int:
        return math.ceil(reals / self.params.reals_per_ciphertext)

    def encrypt(self, values: np.ndarray) -> list[bytes]:
        """Serialized ciphertexts of ``values`` (float64), two reals per slot."""
        return [seal_io.dump(c) for c in self.encrypt_ciphertexts(values)]

    def encrypt_ciphertexts(self, values: np.ndarray) -> list[seal.Ciphertext]:
        """The ciphertexts of ``values`` (float64), two reals per slot, as SEAL objects."""
        n = self.params.reals_per_ciphertext
        rows = np.zeros((self.ciphertexts_for(len(values)), n))
        rows.reshape(-1)[: len(values)] = values
        out = []
        for row in rows:
            plain = seal.Plaintext()
            self.encoder.encode((row[: n // 2] + 1j * row[n // 2 :]).tolist(), self.params.scale, plain)
            cipher = seal.Ciphertext(self.context)
            self.encryptor.encrypt(plain, cipher)
            out.append(cipher)
        return out

    def load(self, data: bytes) -> seal.Ciphertext:
        """A ciphertext from untrusted bytes: SEAL-validated, in NTT form, fresh (size 2, first data level) and
        at the expected scale, so that adding and decrypting it cannot fail."""
        cipher = seal_io.load(seal.Ciphertext, data, self.context, what="ciphertext")
        if not cipher.is_ntt_form():
            raise MessageError("ciphertext is not in NTT form")
        if cipher.parms_id() != self.context.first_parms_id():
            raise MessageError("ciphertext is not at this context's data level")
        if cipher.size() != 2:
            raise MessageError(f"ciphertext of size {cipher.size()}, expected a fresh one of size 2")
        if not math.isclose(cipher.scale, self.params.scale, rel_tol=1e-9):
            raise MessageError(f"ciphertext scale {cipher.scale} differs from {self.params.scale}")
        return cipher

    def add_inplace(self, acc: seal.Ciphertext, other: seal.Ciphertext) -> None:
        """``acc += other``; SEAL's refusal becomes a :class:`MessageError`."""
        try:
            self.evaluator.add_inplace(acc, other)
        except seal_io.SEAL_ERRORS as err:
            raise MessageError(f"SEAL refused to add ciphertexts: {err}") from None

    def sub_inplace(self, acc: seal.Ciphertext, other: seal.Ciphertext) -> None:
        """``acc -= other``; SEAL's refusal becomes a :class:`MessageError`."""
        try:
            self.evaluator.sub_inplace(acc, other)
        except seal_io.SEAL_ERRORS as err:
            raise MessageError(f"SEAL refused to subtract ciphertexts: {err}") from None

    def sum(self, rows: list[list[bytes]] | tuple[tuple[bytes, ...], ...]) -> list[seal.Ciphertext]:
        """Ciphertext-wise sum of several contributions (each a list of serialized ciphertexts), every one
        checked by :meth:`load` before it is added; any refusal leaves nothing behind."""
        if not rows or len({len(r) for r in rows}) != 1:
            raise MessageError("contributions to add have different ciphertext counts")
        total = [self.load(b) for b in rows[0]]
        for row in rows[1:]:
            for acc, blob in zip(total, row):
                self.add_inplace(acc, self.load(blob))
        return total


def unpack(decoded: list[np.ndarray], length: int) -> np.ndarray:
    """The first ``length`` reals of decoded complex rows (inverse of the packing above)."""
    rows = [np.concatenate([d.real, d.imag]) for d in decoded]
    return np.concatenate(rows)[:length]
