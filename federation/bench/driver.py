"""Times one aggregation round stage by stage, every party in this process.

The same sans-I/O sessions as in training; here each call is timed on its own so client work, server
work and the masking step can be compared with the raw PRG floor measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from secagg.aggregation import AggregateResult, Aggregator, RoundContext


@dataclass
class RoundTimings:
    """Seconds per party and stage, and bytes per client and stage, of one round."""

    encode_seconds: dict[int, float] = field(default_factory=dict)
    client_stage_seconds: dict[int, list[float]] = field(default_factory=dict)
    server_stage_seconds: list[float] = field(default_factory=list)
    bytes_up: dict[int, list[int]] = field(default_factory=dict)
    bytes_down: dict[int, list[int]] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def client_seconds(self) -> np.ndarray:
        """Total protocol seconds of each client (session set-up, i.e. encoding, included)."""
        return np.array([self.encode_seconds[c] + sum(s) for c, s in self.client_stage_seconds.items()])

    def stage_mean(self, stage: int) -> float:
        """Mean client seconds spent in ``stage`` over the clients that took part in it."""
        times = [s[stage] for s in self.client_stage_seconds.values() if len(s) > stage]
        return float(np.mean(times)) if times else 0.0


def timed_round(aggregator: Aggregator, ctx: RoundContext, updates: dict[int, np.ndarray],
                drop_stage: dict[int, int]) -> tuple[AggregateResult, RoundTimings]:
    t = RoundTimings()
    start = time.perf_counter()
    sessions = {}
    uploads = {}
    for c in ctx.clients:
        t0 = time.perf_counter()
        sessions[c] = aggregator.client_session(ctx, c, updates[c], 1.0)
        t.encode_seconds[c] = time.perf_counter() - t0
        t.client_stage_seconds[c], t.bytes_up[c], t.bytes_down[c] = [], [], []
        if drop_stage.get(c) == 0:
            continue
        t0 = time.perf_counter()
        uploads[c] = sessions[c].start()
        t.client_stage_seconds[c].append(time.perf_counter() - t0)
    server = aggregator.server_session(ctx)
    stage = 0
    while True:
        t0 = time.perf_counter()
        for c, message in uploads.items():
            t.bytes_up[c].append(len(message))
            server.collect(c, message)
        replies = server.close_stage()
        t.server_stage_seconds.append(time.perf_counter() - t0)
        if server.finished:
            break
        stage += 1
        uploads = {}
        for c, message in replies.items():
            t.bytes_down[c].append(len(message))
            if drop_stage.get(c, stage + 1) <= stage:
                continue
            t0 = time.perf_counter()
            uploads[c] = sessions[c].handle(message)
            t.client_stage_seconds[c].append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    result = server.result()
    t.server_stage_seconds[-1] += time.perf_counter() - t0
    t.wall_seconds = time.perf_counter() - start
    return result, t
