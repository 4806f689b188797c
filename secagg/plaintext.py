"""Plaintext aggregation: clients send their update in the clear; the baseline every other mode is measured against.

Message ``PLAIN_UPDATE`` (client -> server) body: ``array<f4>[dimension]`` update, ``f64`` weight.

Like the masking and CKKS modes, each coordinate counts clipped to ``[-clip, clip]`` (default 1.0, their
default too), so the three modes compute the same aggregate of the same updates. Here the server clips what
it receives, so a client cannot skip it; ``clip=None`` releases the exact weighted mean. A non-finite update
or weight, a weight above ``max_weight`` (when set) and a contribution that would overflow the running sum
are refused with :class:`~secagg.errors.UpdateRejected`.
"""

from __future__ import annotations

import math

import numpy as np

from secagg.aggregation import AggregateResult, RoundContext
from secagg.envelopes import open_envelope, seal_envelope
from secagg.errors import AggregationAborted, ConfigurationError, ProtocolError, UpdateRejected
from secagg.wire import BodyReader, BodyWriter, MessageKind


def encode_update(ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> bytes:
    """The ``PLAIN_UPDATE`` message of one client."""
    body = BodyWriter().array(np.asarray(update, dtype=np.float32)).f64(weight).to_bytes()
    return seal_envelope(ctx, client_id, MessageKind.PLAIN_UPDATE, body)


def check_weight(weight: float, max_weight: float | None = None) -> float:
    if not math.isfinite(weight) or weight <= 0:
        raise UpdateRejected(f"weight must be finite and positive, got {weight}")
    if max_weight is not None and weight > max_weight:
        raise UpdateRejected(f"weight {weight} above max_weight={max_weight}")
    return weight


_PIECE = 1 << 16  # the overflow check's working buffer, in float64 values


class PlaintextClient:
    def __init__(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float,
                 max_weight: float | None = None) -> None:
        if update.shape != (ctx.dimension,):
            raise UpdateRejected(f"update of shape {update.shape}, expected ({ctx.dimension},)")
        self._message = encode_update(ctx, client_id, update, check_weight(float(weight), max_weight))

    def start(self) -> bytes:
        return self._message

    def handle(self, message: bytes) -> bytes:
        raise ProtocolError("plaintext aggregation has a single stage")


class PlaintextServer:
    """``details["clipped"]`` of the result: how many received coordinates lay outside ``[-clip, clip]``."""

    def __init__(self, ctx: RoundContext, clip: float | None = 1.0, max_weight: float | None = None) -> None:
        self._ctx = ctx
        self._clip, self._max_weight = clip, max_weight
        self._expected = set(ctx.clients)
        self._sum = np.zeros(ctx.dimension, dtype=np.float64)
        self._scratch = np.empty(ctx.dimension, dtype=np.float64)
        self._piece = np.empty(min(_PIECE, ctx.dimension), dtype=np.float64)
        self._weight = 0.0
        self._clipped = 0
        self._contributors: list[int] = []
        self._finished = False
        self._max_body = 4 * ctx.dimension + 64

    @property
    def finished(self) -> bool:
        return self._finished

    def collect(self, sender: int, message: bytes) -> None:
        if self._finished:
            raise ProtocolError("round already closed")
        if sender not in self._expected:
            raise ProtocolError(f"client {sender} is not a participant of round {self._ctx.round}")
        if sender in self._contributors:
            raise ProtocolError(f"duplicate update from client {sender}")
        body = open_envelope(self._ctx, message, MessageKind.PLAIN_UPDATE, sender=sender, max_body=self._max_body)
        reader = BodyReader(body)
        received = reader.array(dtype="f4", shape=(self._ctx.dimension,), copy=False)
        weight = reader.f64()
        reader.finish()
        check_weight(weight, self._max_weight)
        if not np.isfinite(received).all():
            raise UpdateRejected(f"update from client {sender} has NaN or infinite values")
        update = self._scratch  # one float64 buffer for every upload: the server holds the sum and this only
        np.copyto(update, received)
        clipped = 0
        if self._clip is not None:
            clipped = int(np.count_nonzero((update > self._clip) | (update < -self._clip)))
            np.clip(update, -self._clip, self._clip, out=update)
        with np.errstate(over="ignore"):  # an overflow is refused just below
            update *= weight
        if not (self._fits(update) and math.isfinite(self._weight + weight)):
            raise UpdateRejected(f"update from client {sender} would overflow the sum")
        self._sum += update
        self._weight, self._clipped = self._weight + weight, self._clipped + clipped
        self._contributors.append(sender)

    def _fits(self, update: np.ndarray) -> bool:
        """Whether ``sum + update`` is finite everywhere, checked a piece at a time before anything is added
        (a refusal changes nothing)."""
        if not np.isfinite(update).all():
            return False
        for start in range(0, len(update), _PIECE):
            piece = self._piece[: min(_PIECE, len(update) - start)]
            with np.errstate(over="ignore"):
                np.add(self._sum[start:start + len(piece)], update[start:start + len(piece)], out=piece)
            if not np.isfinite(piece).all():
                return False
        return True

    def close_stage(self) -> dict[int, bytes]:
        self._finished = True
        return {}

    def result(self) -> AggregateResult:
        if not self._finished:
            raise ProtocolError("result requested before the round closed")
        if len(self._contributors) < self._ctx.min_clients:
            raise AggregationAborted(
                f"{len(self._contributors)} valid updates, fewer than min_clients={self._ctx.min_clients}"
            )
        mean = (self._sum / self._weight).astype(np.float32)
        return AggregateResult(mean, self._weight, tuple(sorted(self._contributors)),
                               details={"clipped": float(self._clipped)})


class PlaintextAggregator:
    """No protection: the server sees every update. The reference for overhead and accuracy.

    ``clip``: each coordinate counts clipped to ``[-clip, clip]``, as in the masking and CKKS modes (None: no
    clipping). ``max_weight``: the public bound on a client's weight (None: no bound).
    """

    stages = 1
    clip: float | None = 1.0  # class defaults too, for subclasses that do not call __init__
    max_weight: float | None = None

    def __init__(self, clip: float | None = 1.0, max_weight: float | None = None) -> None:
        if clip is not None and not (math.isfinite(clip) and clip > 0):
            raise ConfigurationError(f"clip must be finite and positive, got {clip}")
        if max_weight is not None and not (math.isfinite(max_weight) and max_weight > 0):
            raise ConfigurationError(f"max_weight must be finite and positive, got {max_weight}")
        self.clip, self.max_weight = clip, max_weight

    def client_session(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> PlaintextClient:
        return PlaintextClient(ctx, client_id, update, weight, self.max_weight)

    def server_session(self, ctx: RoundContext) -> PlaintextServer:
        return PlaintextServer(ctx, self.clip, self.max_weight)
