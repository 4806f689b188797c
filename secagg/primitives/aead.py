"""Authenticated encryption (AES-256-GCM) of the secret shares that clients relay through the server."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secagg.errors import AuthenticationError

NONCE_BYTES = 12
TAG_BYTES = 16


def seal(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """``nonce || ciphertext || tag`` with a fresh random nonce."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def open_sealed(key: bytes, sealed: bytes, associated_data: bytes) -> bytes:
    """The plaintext, or :class:`AuthenticationError` for any tampering, truncation or wrong key/context."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise AuthenticationError("decryption failed")
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated_data)
    except InvalidTag:
        raise AuthenticationError("decryption failed") from None
