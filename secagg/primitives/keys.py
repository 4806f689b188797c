"""Key agreement (X25519 + HKDF-SHA256) and signatures (Ed25519).

A derived key is bound to the session, the round, the two client ids (in a canonical order, so both ends
agree) and a purpose label, so no key is ever reused across rounds, pairs or uses.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import AuthenticationError, MessageError

PUBLIC_KEY_BYTES = 32
PRIVATE_KEY_BYTES = 32
SIGNATURE_BYTES = 64
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()


class Purpose(bytes, enum.Enum):
    """The use a derived key is bound to."""

    SHARE_ENCRYPTION = b"secagg/share-encryption/v1"
    PAIRWISE_MASK = b"secagg/pairwise-mask/v1"


@dataclass(frozen=True)
class AgreementKey:
    """An X25519 key pair for Diffie-Hellman agreement."""

    private: X25519PrivateKey

    @classmethod
    def generate(cls) -> AgreementKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> AgreementKey:
        if len(data) != PRIVATE_KEY_BYTES:
            raise MessageError(f"X25519 private key must be {PRIVATE_KEY_BYTES} bytes")
        return cls(X25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return self.private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)

    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(_RAW, _RAW_PUB)

    def derive(self, peer_public: bytes, *, session: bytes, round: int, ids: tuple[int, int],
               purpose: Purpose) -> bytes:
        """A 32-byte key shared with the owner of ``peer_public``, bound to the context."""
        try:
            peer = X25519PublicKey.from_public_bytes(peer_public)
            secret = self.private.exchange(peer)
        except ValueError as err:
            raise MessageError(f"invalid X25519 public key: {err}") from None
        low, high = sorted(ids)
        info = purpose.value + session + struct.pack(">III", round, low, high)
        return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(secret)


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 identity key: what a client signs its advertised keys and survivor views with."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> SigningKey:
        if len(data) != PRIVATE_KEY_BYTES:
            raise AuthenticationError(f"an Ed25519 private key is {PRIVATE_KEY_BYTES} bytes, got {len(data)}")
        return cls(Ed25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        """The raw private key, for the owner's own storage only."""
        return self.private.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)

    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(_RAW, _RAW_PUB)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


def verify_signature(public: bytes, signature: bytes, message: bytes) -> None:
    """Return if ``signature`` is ``public``'s over ``message``; else raise :class:`AuthenticationError`."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        raise AuthenticationError("signature verification failed") from None
