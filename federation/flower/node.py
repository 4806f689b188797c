"""What a SuperNode keeps between messages: its identity key, the enrolment it was sent, the suspended session.

What must outlive a ClientApp process lives in the node's ``context.state``, as our own bytes. Under Flower's
default (a fresh ClientApp process for every message) that includes a protocol session that spans several
stages; a long-lived ClientApp process (:mod:`federation.flower.executor`) keeps the session, and the client,
as live objects instead (:mod:`federation.flower.live`). That state holds the node's secrets
(its signing key, a masking session's private keys and seeds, the key holder's secret key); it stays on
the node: Flower keeps a ClientApp's context on its SuperNode and never sends it to the SuperLink.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context

from secagg.primitives.keys import SigningKey

STATE = "secagg.node"


class NodeState:
    """Typed access to the node's ``secagg.node`` record (bytes fields only)."""

    def __init__(self, context: Context) -> None:
        self._context = context
        if STATE not in context.state:
            context.state[STATE] = ConfigRecord({})
        self._record: ConfigRecord = context.state[STATE]

    def get(self, name: str) -> bytes | None:
        value = self._record.get(name)
        return value if isinstance(value, bytes) else None

    def put(self, name: str, value: bytes) -> None:
        self._record[name] = value

    def put_float(self, name: str, value: float) -> None:
        self._record[name] = float(value)

    def get_float(self, name: str) -> float | None:
        value = self._record.get(name)
        return value if isinstance(value, float) else None

    def drop(self, name: str) -> None:
        self._record.pop(name, None)

    def identity(self) -> SigningKey:
        """The node's Ed25519 identity key, created on first use and kept for the node's lifetime in the run."""
        stored = self.get("identity")
        if stored is None:
            key = SigningKey.generate()
            self.put("identity", key.private_bytes())
            return key
        return SigningKey.from_private_bytes(stored)
