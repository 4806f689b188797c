"""Servers fold each upload into their running sum as it arrives: what a server keeps does not grow with the
number of clients (Python allocations traced around the server's own calls)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from federation.protection import protection_aggregator
from federation.config import CKKS, Masking
from secagg.aggregation import RoundContext

DIM = 50_000


def retained_by_collect(aggregator, clients: int) -> tuple[int, int]:
    """(bytes the server session still holds from its collect calls, bytes of the uploads it was given)."""

    rng = np.random.default_rng(0)
    ctx = RoundContext.new(1, tuple(range(clients)), DIM)
    sessions = {c: aggregator.client_session(ctx, c, rng.uniform(-0.5, 0.5, DIM).astype(np.float32), 1.0)
                for c in ctx.clients}
    server = aggregator.server_session(ctx)
    uploads = {c: s.start() for c, s in sessions.items()}
    retained = given = 0
    tracemalloc.start()
    try:
        while True:
            before = tracemalloc.get_traced_memory()[0]
            for c, message in uploads.items():
                given += len(message)
                copy = bytearray(message)  # traced: a server that keeps a view of its upload keeps this alive
                server.collect(c, copy)
                del copy
            retained += tracemalloc.get_traced_memory()[0] - before
            replies = server.close_stage()
            if server.finished:
                break
            uploads = {c: sessions[c].handle(m) for c, m in replies.items()}
    finally:
        tracemalloc.stop()
    assert server.result().contributors == ctx.clients
    return retained, given


@pytest.mark.parametrize("protection", [None, Masking(), CKKS()], ids=["plaintext", "mask", "ckks"])
def test_server_memory_does_not_grow_with_clients(protection):
    few, few_given = retained_by_collect(protection_aggregator(protection, 1.0, min_clients=1, clients=3), clients=3)
    many, many_given = retained_by_collect(protection_aggregator(protection, 1.0, min_clients=1, clients=12), clients=12)
    # before streaming the masking and CKKS servers kept every masked input or ciphertext: 9 more uploads
    assert many - few < 0.05 * (many_given - few_given), (few, many, many_given - few_given)
