"""The aggregation seam: how one round's client updates become their weighted average.

Every protection mode (plaintext, pairwise masking, CKKS) implements :class:`Aggregator`, a factory of
sans-I/O sessions. A runtime drives them in *stages*:

1. each client session's :meth:`ClientSession.start` returns its first upload;
2. the runtime hands every upload that arrived to :meth:`ServerSession.collect`;
3. :meth:`ServerSession.close_stage` (the stage deadline) returns the next message for each client still
   taking part, or an empty mapping once :attr:`ServerSession.finished`;
4. each client answers with :meth:`ClientSession.handle`, and the runtime goes back to step 2.

A client that stops answering at any stage has dropped out. Sessions never do I/O, sleep or use threads,
so the same objects run in-process, in fault-injection tests and under a distributed engine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from secagg.errors import ConfigurationError
from secagg.wire import SESSION_BYTES


@dataclass(frozen=True)
class RoundContext:
    """What every party of one aggregation round agrees on before it starts.

    ``clients`` are the sampled participants; ``dimension`` the length of the flat update vector;
    ``min_clients`` the fewest valid contributions for which the aggregate may be released.
    """

    session: bytes
    round: int
    clients: tuple[int, ...]
    dimension: int
    min_clients: int = 1

    def __post_init__(self) -> None:
        if len(self.session) != SESSION_BYTES:
            raise ConfigurationError(f"session id must be {SESSION_BYTES} bytes")
        if self.round < 0 or self.round >= 2**32:
            raise ConfigurationError(f"round {self.round} out of range")
        if len(set(self.clients)) != len(self.clients):
            raise ConfigurationError("client ids must be distinct")
        if any(c < 0 or c >= 2**32 - 1 for c in self.clients):
            raise ConfigurationError("client ids must fit in u32 and differ from the server id")
        if self.dimension <= 0:
            raise ConfigurationError(f"dimension must be positive, got {self.dimension}")
        if self.min_clients < 1:
            raise ConfigurationError(f"min_clients must be at least 1, got {self.min_clients}")

    @classmethod
    def new(cls, round: int, clients: tuple[int, ...], dimension: int, min_clients: int = 1) -> RoundContext:
        """A context with a fresh random session id."""
        return cls(os.urandom(SESSION_BYTES), round, tuple(clients), dimension, min_clients)


@dataclass(frozen=True)
class AggregateResult:
    """The released aggregate: the weighted mean update and who is in it.

    ``events`` are privacy events emitted by the aggregation itself (e.g. central noise); ``details``
    are protocol-specific measurements (documented by each aggregator).
    """

    mean: np.ndarray
    total_weight: float
    contributors: tuple[int, ...]
    events: tuple[object, ...] = ()
    details: Mapping[str, float] = field(default_factory=dict)


class ClientSession(Protocol):
    """One client's side of one aggregation round."""

    def start(self) -> bytes:
        """The client's first upload."""
        ...

    def handle(self, message: bytes) -> bytes:
        """Answer the server's message of the next stage."""
        ...


class ServerSession(Protocol):
    """The server's side of one aggregation round."""

    @property
    def finished(self) -> bool: ...

    def collect(self, sender: int, message: bytes) -> None:
        """Accept one upload of the current stage; raise a :class:`~secagg.errors.SecAggError` to refuse it."""
        ...

    def close_stage(self) -> dict[int, bytes]:
        """End the current stage; return the next message per client, empty once finished."""
        ...

    def result(self) -> AggregateResult:
        """The aggregate, or :class:`~secagg.errors.AggregationAborted`."""
        ...


@runtime_checkable
class Aggregator(Protocol):
    """A protection mode: a factory of client and server sessions for each round."""

    @property
    def stages(self) -> int:
        """How many client uploads a surviving client makes per round."""
        ...

    def client_session(
        self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float
    ) -> ClientSession: ...

    def server_session(self, ctx: RoundContext) -> ServerSession: ...
