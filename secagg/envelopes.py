"""Sealing and opening envelopes bound to one aggregation round."""

from __future__ import annotations

from secagg.aggregation import RoundContext
from secagg.errors import ProtocolError
from secagg.wire import DEFAULT_MAX_BODY, Envelope, MessageKind


def seal_envelope(ctx: RoundContext, sender: int, kind: MessageKind, body: bytes) -> bytes:
    return Envelope(kind, ctx.session, ctx.round, sender, body).to_bytes()


def open_envelope(ctx: RoundContext, message: bytes, kind: MessageKind, *, sender: int,
                  max_body: int = DEFAULT_MAX_BODY) -> bytes:
    """The body of ``message`` after checking its kind, session, round and that it comes from ``sender``."""
    env = Envelope.from_bytes(message, max_body=max_body).expect(kind)
    if env.session != ctx.session or env.round != ctx.round:
        raise ProtocolError(f"message for another session or round (round {env.round}, expected {ctx.round})")
    if env.sender != sender:
        raise ProtocolError(f"message claims sender {env.sender} but came from {sender}")
    return env.body
