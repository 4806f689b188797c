"""Runs every (mode, params, clients, dropout) configuration and records what it cost.

Dropouts are placed where they cost the protocol most: a masking client drops after sharing its keys and
before sending its masked input (the server must then rebuild its mask key and remove its pairwise masks);
a plaintext or CKKS client simply never sends its update. Updates are uniform in [-0.5, 0.5]. For CKKS the
client's session set-up is its encryption, and the key holder's decryption is timed apart. Peak memory is
what Python and NumPy allocated during one extra, untimed warm-up round (tracemalloc; SEAL's own C++
allocations are not seen), the synthetic updates excluded.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from federation.bench import floors
from federation.bench.driver import RoundTimings, timed_round
from federation.bench.modes import BenchMode
from federation.config import CKKS, Masking, Protection
from federation.errors import ConfigError
from federation.protection import protection_aggregator
from secagg.aggregation import Aggregator, RoundContext


# the index of the upload that carries the update (masked input); dropouts happen just before it
_INPUT_STAGE = {BenchMode.NONE: 0, BenchMode.MASK: 2, BenchMode.MASK_ACTIVE: 3, BenchMode.CKKS: 0}
_MASKING = (BenchMode.MASK, BenchMode.MASK_ACTIVE)


@dataclass(frozen=True)
class BenchCase:
    mode: BenchMode
    params: int
    clients: int
    dropout: float

    def __post_init__(self) -> None:
        if self.params < 1 or self.clients < 2:
            raise ConfigError(f"need at least 1 parameter and 2 clients, got {self.params} and {self.clients}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "mode": self.mode.value}


# every bench client weighs 1: the public weight bound the aggregators were made for before the public API
BENCH_WEIGHT_BOUND = 1.0


def protection(mode: BenchMode) -> Protection:
    """``mode`` as the public API's protection setting."""
    if mode in _MASKING:
        return Masking(consistency_check=mode is BenchMode.MASK_ACTIVE)
    return CKKS() if mode is BenchMode.CKKS else None


def make_aggregator(mode: BenchMode, clients: int) -> Aggregator:
    """The aggregator a federation of ``clients`` per round under ``mode`` runs with
    (:func:`federation.protection.protection_aggregator`)."""
    return protection_aggregator(protection(mode), BENCH_WEIGHT_BOUND, min_clients=1, clients=clients)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def run_case(case: BenchCase, *, repeat: int = 3, seed: int = 0) -> dict[str, Any]:
    """Measure ``case`` ``repeat`` times; return one results row (see docs/benchmarks.md for its keys)."""
    rng = np.random.default_rng(seed)  # synthetic updates and the dropout draw: simulation, not secrets
    updates = {c: rng.uniform(-0.5, 0.5, case.params).astype(np.float32) for c in range(case.clients)}
    dropping = rng.choice(case.clients, int(round(case.dropout * case.clients)), replace=False)
    drop_stage = {int(c): _INPUT_STAGE[case.mode] for c in dropping}
    prg = floors.prg_seconds(case.params + 1)
    # a first, untimed round warms up and measures peak memory (tracing allocations would distort timings)
    tracemalloc.start()
    timed_round(make_aggregator(case.mode, case.clients), RoundContext.new(1, tuple(range(case.clients)), case.params),
                updates, drop_stage)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rows: list[tuple[Any, RoundTimings]] = []
    for _ in range(repeat):
        ctx = RoundContext.new(1, tuple(range(case.clients)), case.params)
        rows.append(timed_round(make_aggregator(case.mode, case.clients), ctx, updates, drop_stage))
    result, last = rows[-1]
    survivors = list(result.contributors)
    expected = np.mean(np.stack([updates[c] for c in survivors]).astype(np.float64), axis=0)
    uploads = [sum(last.bytes_up[c]) for c in survivors]
    input_bytes = [last.bytes_up[c][_INPUT_STAGE[case.mode]] for c in survivors]
    row: dict[str, Any] = {
        **case.describe(),
        "repeat": repeat,
        "survivors": len(survivors),
        "round_seconds": spread([t.wall_seconds for _, t in rows]),
        "client_seconds": spread([float(t.client_seconds().mean()) for _, t in rows]),
        "server_seconds": spread([sum(t.server_stage_seconds) for _, t in rows]),
        "bytes_up_per_client": float(np.mean(uploads)),
        "bytes_down_per_client": float(np.mean([sum(last.bytes_down[c]) for c in survivors])),
        "input_bytes_per_client": float(np.mean(input_bytes)),
        "expansion": float(np.mean(input_bytes)) / (4 * case.params),
        "max_abs_error": float(np.abs(result.mean - expected).max()),
        "floor_prg_seconds": prg,
        "floor_float32_sum_seconds": floors.float32_sum_seconds(case.params),
        "peak_memory_bytes": int(peak),
    }
    if case.mode in _MASKING:
        row.update(_masking_columns(rows, prg, _INPUT_STAGE[case.mode]))
    if case.mode is BenchMode.CKKS:
        encrypt = [float(np.mean(list(t.encode_seconds.values()))) for _, t in rows]
        row.update(key_holder_seconds=spread([r.details["key_holder_seconds"] for r, _ in rows]),
                   encrypt_seconds=spread(encrypt),
                   encrypt_params_per_second=case.params / float(np.median(encrypt)),
                   bytes_per_param=float(np.mean(input_bytes)) / case.params)
    return row


def _masking_columns(rows: list[tuple[Any, RoundTimings]], prg: float, input_stage: int) -> dict[str, Any]:
    result, last = rows[-1]
    d = result.details
    partners = d["degree"]  # everyone shared keys, so each survivor masks with all its neighbours
    mask_floor = (partners + 1) * prg
    unmask_expansions = d["self_masks_removed"] + d["pairwise_masks_removed"]
    masking = [t.stage_mean(input_stage) for _, t in rows]
    unmask = [t.server_stage_seconds[-1] for _, t in rows]
    return {
        "degree": d["degree"],
        "threshold": d["threshold"],
        "key_and_share_bytes_per_client": float(np.mean([sum(last.bytes_up[c][:input_stage])
                                                         for c in result.contributors])),
        "encode_seconds": spread([float(np.mean(list(t.encode_seconds.values()))) for _, t in rows]),
        "masking_seconds": spread(masking),
        "masking_floor_seconds": mask_floor,
        "masking_ratio": float(np.median(masking)) / mask_floor,
        "unmask_seconds": spread(unmask),
        "unmask_prg_expansions": unmask_expansions,
        "unmask_floor_seconds": unmask_expansions * prg,
        "unmask_ratio": float(np.median(unmask)) / (unmask_expansions * prg),
    }
