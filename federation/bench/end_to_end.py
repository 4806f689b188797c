"""``secagg bench --end-to-end``: the default training job in each protection mode, without and with DP,
timed round by round. DP rows: DP-SGD in every client (any mode), and, under masking or CKKS, client-level
distributed DP with every client's share needed (``min_clients`` = all clients, so the noise equals central
DP's)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from federation.experiment import DPMode, ExperimentConfig, PrivacySettings, SecureMode, build_federation

DP_SETTINGS = PrivacySettings(noise_multiplier=1.0, clip=1.0)


def run_end_to_end(modes: list[SecureMode], *, rounds: int = 20, seed: int = 0,
                   with_dp: bool = True) -> list[dict[str, Any]]:
    """Per mode, without and with DP: mean wall seconds per round (training included), final accuracy,
    and the ratio to plaintext without DP."""
    secure_modes = [SecureMode.NONE, *[m for m in modes if m is not SecureMode.NONE]]
    rows = []
    for mode in secure_modes:
        dp_modes = [DPMode.NONE]
        if with_dp:
            dp_modes += [DPMode.LOCAL] + ([DPMode.DISTRIBUTED] if mode is not SecureMode.NONE else [])
        for dp in dp_modes:
            base = ExperimentConfig()
            config = replace(base, secure=mode, rounds=rounds, seed=seed, dp=dp,
                             privacy=None if dp is DPMode.NONE else DP_SETTINGS,
                             min_clients=base.clients if dp is DPMode.DISTRIBUTED else base.min_clients)
            rows.append({"mode": mode.value, "dp": dp.value, **_timed_run(config)})
    base = rows[0]["round_seconds"]
    for row in rows:
        row["ratio_to_plaintext"] = row["round_seconds"] / base
    return rows


def _timed_run(config: ExperimentConfig) -> dict[str, Any]:
    federation = build_federation(config)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_round(_record: object) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    history = federation.run(on_round=on_round)
    row: dict[str, Any] = {"rounds": config.rounds, "round_seconds": float(np.mean(times)),
                           "round_seconds_median": float(np.median(times)), "final_accuracy": history[-1].accuracy,
                           "bytes_up_per_client": float(np.mean([h.bytes_up for h in history]))}
    if history.ledger is not None:
        row["epsilon"] = history.epsilon()
    return row
