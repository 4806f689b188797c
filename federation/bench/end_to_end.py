"""``secagg bench --end-to-end``: the default training job in each protection mode, timed round by round."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from federation.experiment import ExperimentConfig, SecureMode, build_federation


def run_end_to_end(modes: list[SecureMode], *, rounds: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """Per mode: mean wall seconds per round (training included), final accuracy, and the ratio to plaintext."""
    rows = []
    for mode in [SecureMode.NONE, *[m for m in modes if m is not SecureMode.NONE]]:
        config = replace(ExperimentConfig(), secure=mode, rounds=rounds, seed=seed)
        federation = build_federation(config)
        times: list[float] = []
        last = [time.perf_counter()]

        def on_round(_record: object) -> None:
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        history = federation.run(on_round=on_round)
        rows.append({"mode": mode.value, "rounds": rounds, "round_seconds": float(np.mean(times)),
                     "round_seconds_median": float(np.median(times)), "final_accuracy": history[-1].accuracy,
                     "bytes_up_per_client": float(np.mean([h.bytes_up for h in history]))})
    base = rows[0]["round_seconds"]
    for row in rows:
        row["ratio_to_plaintext"] = row["round_seconds"] / base
    return rows
