"""A minimal in-test runtime for sans-I/O aggregation sessions, with dropouts at chosen stages."""

from __future__ import annotations

import numpy as np

from secagg.aggregation import AggregateResult, Aggregator, RoundContext


def run_round(aggregator: Aggregator, updates: dict[int, np.ndarray], weights: dict[int, float] | None = None,
              drop_stage: dict[int, int] | None = None, min_clients: int = 1, ctx: RoundContext | None = None,
              tamper=None) -> tuple[RoundContext, AggregateResult]:
    """Drive one round; ``tamper(stage, recipient, message) -> message`` may rewrite server messages."""
    drop_stage = drop_stage or {}
    weights = weights or {c: 1.0 for c in updates}
    dim = len(next(iter(updates.values())))
    ctx = ctx or RoundContext.new(1, tuple(sorted(updates)), dim, min_clients)
    sessions = {c: aggregator.client_session(ctx, c, updates[c], weights[c]) for c in ctx.clients}
    server = aggregator.server_session(ctx)
    uploads = {c: s.start() for c, s in sessions.items() if drop_stage.get(c) != 0}
    stage = 0
    while True:
        for c, m in uploads.items():
            server.collect(c, m)
        replies = server.close_stage()
        if server.finished:
            break
        stage += 1
        uploads = {}
        for c, m in replies.items():
            if drop_stage.get(c, 99) <= stage:
                continue
            if tamper is not None:
                m = tamper(stage, c, m)
            uploads[c] = sessions[c].handle(m)
    return ctx, server.result()
