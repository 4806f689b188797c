"""Coefficient encoding of real vectors into compact ciphertexts, and checking untrusted ones.

A vector of L reals is cut into rows of N (the ring degree; the last row is shorter) and row r becomes the
plaintext polynomial ``round(scale * row)`` mod q0, one real per coefficient. A client encrypts it as
``encrypt_zero`` plus the plaintext in coefficient form and uploads each ciphertext compressed
(:mod:`secagg.ckks.compact`). The aggregator rebuilds SEAL ciphertexts in coefficient form (validated by
SEAL's loader as well) and adds them; only the key holder moves a sum to NTT form, to decrypt it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tenseal.sealapi as seal

from secagg.ckks import compact, seal_data, seal_io
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
        self.encryptor = seal.Encryptor(self.context, self.public_key)
        self.evaluator = seal.Evaluator(self.context)
        data = self.context.first_context_data().parms().coeff_modulus()
        if len(data) != 1 or data[0].value() != params.modulus:
            raise MessageError(f"{len(data)} data primes: ciphertexts must live mod q0 alone")
        self.modulus = params.modulus  # q0: coefficients of every accepted ciphertext are residues mod q0
        self.layout = params.layout
        self._parms_id = self.context.first_parms_id()

    def ciphertexts_for(self, reals: int) -> int:
        return math.ceil(reals / self.params.reals_per_ciphertext)

    def encrypt(self, values: np.ndarray) -> list[bytes]:
        """The compact ciphertexts of ``values`` (float64): what a client uploads. The aggregator rebuilds them
        (:meth:`load_upload`), and the client sketches the same rebuild (:mod:`secagg.ckks.sketch`)."""
        n, q = self.params.poly_modulus_degree, self.modulus
        count = self.ciphertexts_for(len(values))
        polys = np.empty((count, 2, n), np.uint64)
        for row in polys:
            cipher = seal.Ciphertext(self.context)
            self.encryptor.encrypt_zero(cipher)
            self.evaluator.transform_from_ntt_inplace(cipher)
            row[:] = seal_data.coefficients(cipher).reshape(2, n)
        message = np.zeros(count * n, np.int64)
        message[: len(values)] = np.rint(np.asarray(values, np.float64) * self.params.scale)
        c0 = polys[:, 0].reshape(-1) + np.where(message < 0, message + q, message).astype(np.uint64)
        c0 = np.where(c0 >= np.uint64(q), c0 - np.uint64(q), c0).reshape(count, n)
        blobs, _, _ = compact.compress(self.layout, c0, polys[:, 1], len(values))
        return blobs

    def load_upload(self, blobs: Sequence[bytes], length: int) -> list[seal.Ciphertext]:
        """The ciphertexts of an untrusted upload of ``length`` reals: every compact blob checked strictly, then
        rebuilt as a SEAL ciphertext in coefficient form (size 2, first level, scale 1) through SEAL's validating
        loader, ready to add."""
        c0, c1 = compact.decompress(self.layout, blobs, length)
        return [self._ciphertext(np.stack([a, b]), ntt=False) for a, b in zip(c0, c1)]

    def load_aggregate(self, data: bytes) -> seal.Ciphertext:
        """A sum from untrusted bytes (SEAL's serialization): SEAL-validated, in coefficient form, size 2, at
        the first level and scale 1, as :meth:`load_upload` and adding make it."""
        cipher = seal_io.load(seal.Ciphertext, data, self.context, what="ciphertext")
        if cipher.is_ntt_form():
            raise MessageError("an aggregate ciphertext in NTT form, expected coefficient form")
        if cipher.parms_id() != self._parms_id:
            raise MessageError("ciphertext is not at this context's data level")
        if cipher.size() != 2:
            raise MessageError(f"ciphertext of size {cipher.size()}, expected 2")
        if cipher.scale != 1.0:
            raise MessageError(f"ciphertext scale {cipher.scale}, expected 1")
        return cipher

    def decode(self, plains: Sequence[seal.Plaintext], length: int) -> np.ndarray:
        """The first ``length`` reals of decrypted plaintexts (NTT form, as SEAL's decryptor leaves them)."""
        n, q = self.params.poly_modulus_degree, self.modulus
        out = []
        for plain in plains:
            data = seal_data.plaintext_coefficients(plain)
            if len(data) != n:
                raise MessageError(f"a decrypted plaintext of {len(data)} coefficients, expected {n}")
            cipher = self._ciphertext(np.stack([data, data]), ntt=True)  # SEAL transforms ciphertexts only
            self.evaluator.transform_from_ntt_inplace(cipher)
            out.append(seal_data.coefficients(cipher)[:n])
        residues = np.concatenate(out)[:length] if out else np.zeros(0, np.uint64)
        centred = np.where(residues > np.uint64(q // 2), -(np.uint64(q) - residues).astype(np.float64),
                           residues.astype(np.float64))
        return centred / self.params.scale

    def _ciphertext(self, polys: np.ndarray, *, ntt: bool) -> seal.Ciphertext:
        return seal_io.load(seal.Ciphertext, seal_data.ciphertext_bytes(self._parms_id, polys, ntt=ntt),
                            self.context, what="ciphertext")

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
