"""What a long-lived ClientApp process keeps between messages: per run, the node's built client and sessions.

Flower's default isolation starts a fresh ClientApp process for every message; then nothing here is used and
everything a later message needs travels in the node's ``context.state`` (see :mod:`federation.flower.node`).
Under :mod:`federation.flower.executor` one process serves every message of its SuperNode, so the client
(dataset, partition, model, optimizer), the open aggregation session and the key holder's key pair stay
live objects across messages and rounds: a stage costs one message, not an import and a rebuild.

Everything is keyed by ``(run id, node id)`` and never shared across runs; only the most recent runs are
kept. What must outlive the process (the identity key, the pinned enrolment, the key holder's key pair and
the rounds it spent) is still written to ``context.state``, so a restarted process goes on from there: it
rebuilds the client at its next message, and an aggregation session that was open is lost: the node answers
the round's next stage that it cannot go on, and the server counts it as dropped before that stage, as
in-process (tests/federation/flower/test_dropouts.py).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from flwr.app import Context

_KEPT_RUNS = 2


@dataclass
class RunCache:
    """One run's live objects on this node: ``client`` (a FederatedClient), its side of the run's ``stack``
    (:class:`federation.protection.Stack`), the open aggregation ``session`` (it holds its own round context)
    and the CKKS ``key_holder``."""

    client: Any = None
    stack: Any = None
    session: Any = None
    key_holder: Any = None

    def close_session(self) -> None:
        self.session = None


class LiveNode:
    """The process-wide cache; :meth:`enable` is called once by a process that serves many messages."""

    def __init__(self) -> None:
        self.enabled = False
        self._runs: OrderedDict[int, dict[int, RunCache]] = OrderedDict()  # run id -> node id -> cache

    def enable(self) -> None:
        self.enabled = True

    def run(self, context: Context) -> RunCache | None:
        """This run's cache on this node (created at its first message); None in a process per message."""
        if not self.enabled:
            return None
        run = int(context.run_id)
        if run not in self._runs:
            self._runs[run] = {}
            while len(self._runs) > _KEPT_RUNS:  # an older run's objects (its secrets included) are let go
                self._runs.popitem(last=False)
        self._runs.move_to_end(run)
        return self._runs[run].setdefault(int(context.node_id), RunCache())

    def clear(self) -> None:
        self._runs.clear()


LIVE = LiveNode()
