"""Plaintext aggregation: clients send their update in the clear; the baseline every other mode is measured against.

Message ``PLAIN_UPDATE`` (client -> server) body: ``array<f4>[dimension]`` update, ``f64`` weight.
"""

from __future__ import annotations

import math

import numpy as np

from secagg.aggregation import AggregateResult, RoundContext
from secagg.envelopes import open_envelope, seal_envelope
from secagg.errors import AggregationAborted, ProtocolError, UpdateRejected
from secagg.wire import BodyReader, BodyWriter, MessageKind


def encode_update(ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> bytes:
    """The ``PLAIN_UPDATE`` message of one client."""
    body = BodyWriter().array(np.asarray(update, dtype=np.float32)).f64(weight).to_bytes()
    return seal_envelope(ctx, client_id, MessageKind.PLAIN_UPDATE, body)


def check_weight(weight: float) -> float:
    if not math.isfinite(weight) or weight <= 0:
        raise UpdateRejected(f"weight must be finite and positive, got {weight}")
    return weight


class PlaintextClient:
    def __init__(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> None:
        if update.shape != (ctx.dimension,):
            raise UpdateRejected(f"update of shape {update.shape}, expected ({ctx.dimension},)")
        self._message = encode_update(ctx, client_id, update, check_weight(float(weight)))

    def start(self) -> bytes:
        return self._message

    def handle(self, message: bytes) -> bytes:
        raise ProtocolError("plaintext aggregation has a single stage")


class PlaintextServer:
    def __init__(self, ctx: RoundContext) -> None:
        self._ctx = ctx
        self._expected = set(ctx.clients)
        self._sum = np.zeros(ctx.dimension, dtype=np.float64)
        self._weight = 0.0
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
        update = reader.array(dtype="f4", shape=(self._ctx.dimension,))
        weight = reader.f64()
        reader.finish()
        check_weight(weight)
        if not np.isfinite(update).all():
            raise UpdateRejected(f"update from client {sender} has NaN or infinite values")
        self._sum += weight * update.astype(np.float64)
        self._weight += weight
        self._contributors.append(sender)

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
        return AggregateResult(mean, self._weight, tuple(sorted(self._contributors)))


class PlaintextAggregator:
    """No protection: the server sees every update. The reference for overhead and accuracy."""

    stages = 1

    def client_session(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> PlaintextClient:
        return PlaintextClient(ctx, client_id, update, weight)

    def server_session(self, ctx: RoundContext) -> PlaintextServer:
        return PlaintextServer(ctx)
