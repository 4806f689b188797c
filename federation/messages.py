"""Federation-level messages: the global model the server broadcasts at the start of each round.

``MODEL_BROADCAST`` (server -> client) body: ``array<f4>[dimension]`` global parameters.
"""

from __future__ import annotations

import numpy as np

from secagg.aggregation import RoundContext
from secagg.errors import ProtocolError, UpdateRejected
from secagg.wire import SERVER_ID, BodyReader, BodyWriter, Envelope, MessageKind


def encode_broadcast(ctx: RoundContext, params: np.ndarray) -> bytes:
    body = BodyWriter().array(np.asarray(params, dtype=np.float32)).to_bytes()
    return Envelope(MessageKind.MODEL_BROADCAST, ctx.session, ctx.round, SERVER_ID, body).to_bytes()


def decode_broadcast(ctx: RoundContext, message: bytes) -> np.ndarray:
    """The global parameters, after checking session, round, sender, dimension and finiteness."""
    env = Envelope.from_bytes(message, max_body=4 * ctx.dimension + 64).expect(MessageKind.MODEL_BROADCAST)
    if env.session != ctx.session or env.round != ctx.round or env.sender != SERVER_ID:
        raise ProtocolError("model broadcast for another session, round or sender")
    reader = BodyReader(env.body)
    params = reader.array(dtype="f4", shape=(ctx.dimension,))
    reader.finish()
    if not np.isfinite(params).all():
        raise UpdateRejected("global model has NaN or infinite values")
    return params
