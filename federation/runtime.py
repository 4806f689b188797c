"""The in-process runtime: drives one round's messages between the server and simulated clients.

It is the only place that moves bytes: it serializes the model broadcast, hands each client's upload to the
server session, delivers the server's replies, injects dropouts at the stage the plan says, and measures
every message's size and the time each party spends. A distributed runtime replaces this module; the
sessions it drives are the same objects.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from federation.client import FederatedClient, LocalResult
from federation.messages import decode_broadcast, encode_broadcast
from secagg.aggregation import AggregateResult, Aggregator, ClientSession, RoundContext
from secagg.errors import AggregationAborted, AuthenticationError, MessageError, ProtocolError, UpdateRejected

# What a single client's bad message or update raises: that client is excluded, the round goes on.
# Anything else (a configuration error, a bug) stops the run.
CLIENT_FAULTS = (MessageError, ProtocolError, UpdateRejected, AuthenticationError)

log = logging.getLogger(__name__)


class ClientStatus(enum.Enum):
    OK = "ok"
    DROPPED = "dropped"
    REJECTED = "rejected"


@dataclass
class ClientReport:
    """What one sampled client did this round, as the runtime saw it."""

    client: int
    status: ClientStatus = ClientStatus.OK
    examples: int = 0
    train_loss: float | None = None
    train_seconds: float = 0.0
    protocol_seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    reason: str | None = None
    events: tuple = ()

    @property
    def seconds(self) -> float:
        return self.train_seconds + self.protocol_seconds


@dataclass
class RoundOutcome:
    """The aggregate (or why there is none) and the per-client and server measurements."""

    result: AggregateResult | None
    abort_reason: str | None
    clients: dict[int, ClientReport]
    server_seconds: float
    events: list[object] = field(default_factory=list)


class InProcessRuntime:
    """Runs every party in this process, one after another."""

    def run_round(self, ctx: RoundContext, params: np.ndarray, clients: Mapping[int, FederatedClient],
                  seeds: Mapping[int, int], drop_stage: Mapping[int, int], aggregator: Aggregator) -> RoundOutcome:
        """One round: broadcast, local training, then the aggregation stages with ``drop_stage`` dropouts.

        ``drop_stage[c] = s`` makes client ``c`` fall silent before its upload of stage ``s`` (0 = before any
        upload, so it does not train either).
        """
        reports = {c: ClientReport(c) for c in ctx.clients}
        server_seconds = 0.0
        start = time.perf_counter()
        broadcast = encode_broadcast(ctx, params)
        server_seconds += time.perf_counter() - start

        sessions: dict[int, ClientSession] = {}
        uploads: dict[int, bytes] = {}
        for c in ctx.clients:
            report = reports[c]
            report.bytes_down += len(broadcast)
            if drop_stage.get(c) == 0:
                self._drop(report, 0)
                continue
            try:
                local = clients[c].fit(decode_broadcast(ctx, broadcast), seeds[c])
                self._record_training(report, local)
                t0 = time.perf_counter()
                sessions[c] = aggregator.client_session(ctx, c, local.delta, float(local.num_examples))
                uploads[c] = sessions[c].start()
                report.protocol_seconds += time.perf_counter() - t0
            except CLIENT_FAULTS as err:
                self._reject(report, err)

        server = aggregator.server_session(ctx)
        stage = 0
        while True:
            t0 = time.perf_counter()
            for c, message in uploads.items():
                reports[c].bytes_up += len(message)
                try:
                    server.collect(c, message)
                except CLIENT_FAULTS as err:
                    self._reject(reports[c], err)
                    sessions.pop(c, None)
            replies = server.close_stage()
            server_seconds += time.perf_counter() - t0
            if server.finished:
                break
            stage += 1
            uploads = {}
            for c, message in replies.items():
                reports[c].bytes_down += len(message)
                if c not in sessions:
                    continue
                if drop_stage.get(c) == stage:
                    self._drop(reports[c], stage)
                    sessions.pop(c)
                    continue
                t0 = time.perf_counter()
                try:
                    uploads[c] = sessions[c].handle(message)
                except CLIENT_FAULTS as err:
                    self._reject(reports[c], err)
                    sessions.pop(c)
                reports[c].protocol_seconds += time.perf_counter() - t0

        t0 = time.perf_counter()
        try:
            result, reason = server.result(), None
        except AggregationAborted as err:
            result, reason = None, str(err)
            log.warning("round %d aborted: %s", ctx.round, err)
        server_seconds += time.perf_counter() - t0
        return RoundOutcome(result, reason, reports, server_seconds, list(result.events) if result else [])

    @staticmethod
    def _record_training(report: ClientReport, local: LocalResult) -> None:
        report.examples = local.num_examples
        report.train_loss = local.train_loss
        report.train_seconds = local.seconds
        report.events = local.events

    @staticmethod
    def _drop(report: ClientReport, stage: int) -> None:
        report.status, report.reason = ClientStatus.DROPPED, f"dropped before stage {stage}"

    @staticmethod
    def _reject(report: ClientReport, err: Exception) -> None:
        report.status, report.reason = ClientStatus.REJECTED, f"{type(err).__name__}: {err}"
        log.warning("client %d rejected: %s", report.client, report.reason)
