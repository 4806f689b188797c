"""Federation-level messages: the global model the server broadcasts at the start of each round.

``MODEL_BROADCAST`` (server -> client) body: ``array<f4>[dimension]`` global parameters.
"""

from __future__ import annotations

import numpy as np

from secagg.aggregation import RoundContext
from secagg.envelopes import open_envelope, seal_envelope
from secagg.errors import UpdateRejected
from secagg.wire import SERVER_ID, BodyReader, BodyWriter, MessageKind


def encode_broadcast(ctx: RoundContext, params: np.ndarray) -> bytes:
    body = BodyWriter().array(np.asarray(params, dtype=np.float32)).to_bytes()
    return seal_envelope(ctx, SERVER_ID, MessageKind.MODEL_BROADCAST, body)


def decode_broadcast(ctx: RoundContext, message: bytes) -> np.ndarray:
    """The global parameters, after checking session, round, sender, dimension and finiteness."""
    body = open_envelope(ctx, message, MessageKind.MODEL_BROADCAST, sender=SERVER_ID, max_body=4 * ctx.dimension + 64)
    reader = BodyReader(body)
    params = reader.array(dtype="f4", shape=(ctx.dimension,))
    reader.finish()
    if not np.isfinite(params).all():
        raise UpdateRejected("global model has NaN or infinite values")
    return params
