"""A SuperNode's enrolment, pinned at first use: the identity directory, the public bound on a client's weight
(both sides of the encoders must use the same one), with DP the noise multiplier (each node checks it against
its own privacy settings first: :func:`federation.calibration.check_noise_multiplier`) and, with CKKS, the key
holder's identity and its signed public key.

The ServerApp (the aggregator) sends the enrolment, so it must not be able to change it later: a second
enrolment with anything different is refused, and nothing of it is stored (check, then commit). A client
encrypts only to a public key that the pinned key-holder identity signed (trust on first use: the first
enrolment is believed; see docs/threat-model.md).
"""

from __future__ import annotations

import hmac
import math
import struct
from dataclasses import dataclass

from federation.flower.codec import decode_directory
from federation.flower.node import NodeState
from secagg.ckks.signing import public_key_payload
from secagg.errors import ProtocolError
from secagg.primitives.keys import PUBLIC_KEY_BYTES, SigningKey, verify_signature


class EnrolmentChanged(ProtocolError):
    """A second enrolment that differs from the one this node pinned first."""


@dataclass(frozen=True)
class Enrolment:
    """What the server sends a node once: ``directory`` (encoded), for CKKS the key holder's Ed25519
    ``key_holder_identity``, its CKKS ``public_key`` and ``public_key_signature`` (clients only), and the
    run's ``weight_bound`` (the largest example count the clients reported) and, with DP, its
    ``noise_multiplier``."""

    directory: bytes
    key_holder_identity: bytes | None = None
    public_key: bytes | None = None
    public_key_signature: bytes | None = None
    weight_bound: float | None = None
    noise_multiplier: float | None = None

    def check(self) -> None:
        """Well-formed, and the public key signed by the key-holder identity (:class:`AuthenticationError`)."""
        decode_directory(self.directory)
        if self.key_holder_identity is not None and len(self.key_holder_identity) != PUBLIC_KEY_BYTES:
            raise ProtocolError("a key-holder identity of the wrong length")
        if self.public_key is not None:
            if self.key_holder_identity is None or self.public_key_signature is None:
                raise ProtocolError("a CKKS public key without the key holder's identity and signature")
            verify_signature(self.key_holder_identity, self.public_key_signature, public_key_payload(self.public_key))
        if self.weight_bound is not None and not (math.isfinite(self.weight_bound) and self.weight_bound > 0):
            raise ProtocolError(f"a weight bound that is not a positive number: {self.weight_bound}")
        if self.noise_multiplier is not None and not (math.isfinite(self.noise_multiplier)
                                                      and self.noise_multiplier > 0):
            raise ProtocolError(f"a noise multiplier that is not a positive number: {self.noise_multiplier}")

    def fields(self) -> dict[str, bytes]:
        named = {"directory": self.directory, "key_holder_identity": self.key_holder_identity,
                 "ckks_public": self.public_key, "ckks_public_signature": self.public_key_signature,
                 "weight_bound": _double(self.weight_bound), "noise_multiplier": _double(self.noise_multiplier)}
        return {name: value for name, value in named.items() if value is not None}


def pin(node: NodeState, enrolment: Enrolment) -> None:
    """Store ``enrolment`` at the node's first enrolment; afterwards refuse any that differs in any field."""
    enrolment.check()
    fields = enrolment.fields()
    pinned = node.get("directory") is not None
    for name in ("directory", "key_holder_identity", "ckks_public", "ckks_public_signature", "weight_bound",
                 "noise_multiplier"):
        stored, sent = node.get(name), fields.get(name)
        if pinned and (stored is None) != (sent is None):
            raise EnrolmentChanged(f"a second enrolment that adds or drops the {name}")
        if stored is not None and sent is not None and not hmac.compare_digest(stored, sent):
            raise EnrolmentChanged(f"the {name} differs from the one pinned at this node's first enrolment")
    for name, value in fields.items():
        node.put(name, value)


def check_key_holder_identity(enrolment: Enrolment, identity: SigningKey) -> None:
    """On the key-holder node: the identity the server announces for it must be its own."""
    if enrolment.key_holder_identity is None or not hmac.compare_digest(enrolment.key_holder_identity,
                                                                         identity.public_bytes()):
        raise ProtocolError("the enrolment names another key-holder identity than this node's")


def pinned_public_key(node: NodeState) -> bytes:
    """The CKKS public key pinned at enrolment, its signature checked again against the pinned key holder."""
    public_key, identity = node.get("ckks_public"), node.get("key_holder_identity")
    signature = node.get("ckks_public_signature")
    if public_key is None or identity is None or signature is None:
        raise ProtocolError("no CKKS public key: this node was never enrolled")
    verify_signature(identity, signature, public_key_payload(public_key))
    return public_key


def pinned_directory(node: NodeState) -> dict[int, bytes]:
    directory = node.get("directory")
    if directory is None:
        raise ProtocolError("no identity directory: this node was never enrolled")
    return decode_directory(directory)


def _double(value: float | None) -> bytes | None:
    return None if value is None else struct.pack(">d", value)


def pinned_noise_multiplier(node: NodeState) -> float | None:
    """The noise multiplier pinned at enrolment (None: the run has no DP)."""
    stored = node.get("noise_multiplier")
    if stored is None:
        return None
    if len(stored) != 8:
        raise ProtocolError("a pinned noise multiplier of the wrong length")
    return float(struct.unpack(">d", stored)[0])


def pinned_weight_bound(node: NodeState) -> float:
    """The public bound on a client's weight pinned at enrolment: the encoders of every party use it."""
    stored = node.get("weight_bound")
    if stored is None or len(stored) != 8:
        raise ProtocolError("no weight bound: this node was never enrolled")
    return float(struct.unpack(">d", stored)[0])
