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
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

import numpy as np

from federation.client import FederatedClient
from federation.messages import decode_broadcast, encode_broadcast
from federation.threads import intra_op_threads
from secagg.aggregation import AggregateResult, Aggregator, ClientSession, RoundContext, ServerSession
from secagg.errors import (AggregationAborted, AuthenticationError, MessageError, ProtocolError, SecAggError,
                           UpdateRejected)

# The refusals a session raises on purpose for one client's bad message or update. Any other exception raised
# while handling one client (a bug reached by crafted bytes, a library's ValueError, the user's training code)
# excludes that client too, but is logged with its traceback; see ``exclude``.
CLIENT_FAULTS = (MessageError, ProtocolError, UpdateRejected, AuthenticationError)

# Never a party's fault: the process itself is failing, so the run stops. (KeyboardInterrupt and SystemExit
# are not Exceptions and always propagate.)
FATAL = (MemoryError,)

log = logging.getLogger(__name__)

Uploads = Mapping[int, bytes] | Iterable[tuple[int, bytes]]
Exchange = Callable[[int, dict[int, bytes]], Uploads]


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
    metrics: dict = field(default_factory=dict)

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


class Runtime(Protocol):
    """Moves one round's messages between the server session and the sampled clients."""

    def run_round(self, ctx: RoundContext, params: np.ndarray, clients: Mapping[int, Any],
                  seeds: Mapping[int, int], drop_stage: Mapping[int, int], aggregator: Aggregator) -> RoundOutcome:
        ...


class InProcessRuntime:
    """Runs every party in this process, one after another.

    Uploads stream: each client's upload reaches the server session as soon as the client makes it, and is
    dropped once the server has folded it in, so the runtime itself holds one upload at a time, never one per
    client. ``threads``: torch's intra-op threads while clients train (:mod:`federation.threads`; None: the
    policy's default for the model's size).
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def run_round(self, ctx: RoundContext, params: np.ndarray, clients: Mapping[int, FederatedClient],
                  seeds: Mapping[int, int], drop_stage: Mapping[int, int], aggregator: Aggregator) -> RoundOutcome:
        """One round: broadcast, local training, then the aggregation stages with ``drop_stage`` dropouts.

        ``drop_stage[c] = s`` makes client ``c`` fall silent before its upload of stage ``s`` (0 = before any
        upload, so it does not train either).
        """
        reports = {c: ClientReport(c) for c in ctx.clients}
        start = time.perf_counter()
        try:
            server = aggregator.server_session(ctx)
        except Exception as err:  # before anyone trains: nothing is spent on a round that cannot finish
            return RoundOutcome(None, abort(ctx, err), reports, time.perf_counter() - start)
        broadcast = encode_broadcast(ctx, params)
        server_seconds = time.perf_counter() - start
        sessions: dict[int, ClientSession] = {}

        def first_uploads() -> Iterator[tuple[int, bytes]]:
            for c in ctx.clients:
                report = reports[c]
                report.bytes_down += len(broadcast)
                if drop_stage.get(c) == 0:
                    mark_dropped(report, 0)
                    continue
                try:
                    local = clients[c].fit(decode_broadcast(ctx, broadcast), seeds[c])
                    record_training(report, local.num_examples, local.train_loss, local.seconds, local.events,
                                    local.metrics)
                    t0 = time.perf_counter()
                    sessions[c] = aggregator.client_session(ctx, c, local.delta, float(local.num_examples))
                    upload = sessions[c].start()
                    report.protocol_seconds += time.perf_counter() - t0
                except Exception as err:
                    exclude(report, err)
                    sessions.pop(c, None)
                    continue
                yield c, upload
                del upload  # the server has folded it in

        def exchange(stage: int, messages: dict[int, bytes]) -> Iterator[tuple[int, bytes]]:
            for c, message in messages.items():
                if c not in sessions:
                    continue
                if drop_stage.get(c) == stage:
                    mark_dropped(reports[c], stage)
                    sessions.pop(c)
                    continue
                t0 = time.perf_counter()
                try:
                    answer = sessions[c].handle(message)
                except Exception as err:
                    exclude(reports[c], err)
                    sessions.pop(c)
                    continue
                finally:
                    reports[c].protocol_seconds += time.perf_counter() - t0
                yield c, answer
                del answer

        with intra_op_threads(self.threads, ctx.dimension):
            result, reason, seconds = drive_stages(ctx, server, first_uploads(), reports, exchange)
        return RoundOutcome(result, reason, reports, server_seconds + seconds, list(result.events) if result else [])



def drive_stages(ctx: RoundContext, server: ServerSession, uploads: Uploads,
                 reports: dict[int, ClientReport], exchange: Exchange) -> tuple[AggregateResult | None, str | None, float]:
    """The server's side of the aggregation stages, whatever carries the messages.

    ``uploads`` are the clients' first uploads, a mapping or (to stream them) an iterable of (client, bytes)
    pairs that may produce each one only when asked; ``exchange(stage, messages)`` delivers the server's
    messages of ``stage`` and returns the answers of the clients that gave one, in either form. Each upload is
    handed to the server session as soon as it is produced. Returns the aggregate (or None and why not) and
    the server's seconds (its own calls only, not the clients' work interleaved with them).
    """
    server_seconds = 0.0
    stage = 0
    while True:
        server_seconds += _deliver(server, uploads, reports)
        t0 = time.perf_counter()
        try:
            replies = server.close_stage()
        except Exception as err:  # the server session gives up: the round ends, the federation goes on
            return None, abort(ctx, err), server_seconds + time.perf_counter() - t0
        server_seconds += time.perf_counter() - t0
        if server.finished:
            break
        stage += 1
        for c, message in replies.items():
            reports[c].bytes_down += len(message)
        uploads = exchange(stage, {c: m for c, m in replies.items() if reports[c].status is ClientStatus.OK})
        del replies
    t0 = time.perf_counter()
    try:
        result, reason = server.result(), None
    except Exception as err:
        result, reason = None, abort(ctx, err)
    return result, reason, server_seconds + time.perf_counter() - t0


def _deliver(server: ServerSession, uploads: Uploads, reports: dict[int, ClientReport]) -> float:
    """Hand every upload to the server session as it comes; the seconds the server spent on them."""
    seconds = 0.0
    for c, message in (uploads.items() if isinstance(uploads, Mapping) else uploads):
        reports[c].bytes_up += len(message)
        t0 = time.perf_counter()
        try:
            server.collect(c, message)
        except Exception as err:  # whatever one client's message makes the server raise is its fault
            exclude(reports[c], err)
        seconds += time.perf_counter() - t0
        del message
    return seconds


def exclude(report: ClientReport, err: Exception) -> None:
    """Reject the client whose message, session or training raised ``err``; re-raise what is nobody's fault."""
    if isinstance(err, FATAL):
        raise err
    mark_rejected(report, err, unexpected=not isinstance(err, CLIENT_FAULTS))


def abort(ctx: RoundContext, err: Exception) -> str:
    """The abort reason of a round whose server session raised ``err`` (too few survivors, a configuration it
    refuses, a bug); re-raise what is nobody's fault."""
    if isinstance(err, FATAL):
        raise err
    reason = str(err) if isinstance(err, AggregationAborted) else f"{type(err).__name__}: {err}"
    log.warning("round %d aborted: %s", ctx.round, reason, exc_info=None if isinstance(err, SecAggError) else err)
    return reason


def record_training(report: ClientReport, examples: int, loss: float | None, seconds: float,
                    events: tuple = (), metrics: dict | None = None) -> None:
    report.examples, report.train_loss, report.train_seconds, report.events = examples, loss, seconds, events
    report.metrics = dict(metrics or ({} if loss is None else {"loss": loss}))


def mark_dropped(report: ClientReport, stage: int) -> None:
    report.status, report.reason = ClientStatus.DROPPED, f"dropped before stage {stage}"


def mark_rejected(report: ClientReport, err: Exception | str, unexpected: bool = False) -> None:
    """``unexpected``: not a deliberate refusal (maybe a bug reached by crafted input), so log the traceback."""
    reason = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    report.status, report.reason = ClientStatus.REJECTED, reason
    log.warning("client %d rejected: %s", report.client, report.reason,
                exc_info=err if unexpected and isinstance(err, Exception) else None)
