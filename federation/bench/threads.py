"""``secagg bench --threads 1,2``: the default job's round time for each torch thread count, interleaved.

Each sitting runs every thread count once (in turn, so a change in the machine's load hits all of them),
for the default MLP (4,810 parameters) and a wide one (``hidden`` 16,384: 1.2M parameters, above
:data:`federation.threads.SMALL_MODEL_PARAMS`), so the policy's threshold is measured on both sides.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from federation.experiment import ExperimentConfig, build_federation
from federation.params import dimension

WIDTHS = (64, 16384)


def _timed(config: ExperimentConfig, threads: int) -> tuple[float, int, float]:
    """Mean seconds per round of ``federation.run()`` (training and aggregation), parameters, accuracy."""
    federation = build_federation(config, threads=threads)
    start = time.perf_counter()
    history = federation.run()
    return ((time.perf_counter() - start) / len(history), dimension(federation.model),
            float(history[-1].accuracy or 0.0))


def run_thread_bench(thread_counts: Sequence[int], *, rounds: int = 5, sittings: int = 3,
                     seed: int = 0) -> list[dict[str, Any]]:
    rows = []
    for hidden in WIDTHS:
        config = replace(ExperimentConfig(), rounds=rounds, seed=seed, hidden=hidden)
        seen: dict[int, list[float]] = {t: [] for t in thread_counts}
        params, accuracy = 0, 0.0
        for _ in range(sittings):
            for t in thread_counts:
                seconds, params, accuracy = _timed(config, t)
                seen[t].append(seconds)
        fastest = min(float(np.median(v)) for v in seen.values())
        for t, values in seen.items():
            rows.append({"hidden": hidden, "params": params, "threads": t, "rounds": rounds, "sittings": sittings,
                         "round_seconds": float(np.median(values)), "round_seconds_all": values,
                         "x_fastest": float(np.median(values)) / fastest, "final_accuracy": accuracy})
    return rows


def threads_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["Default job (10 clients trained one after another, 5 local epochs) per torch thread count; median "
             "over the sittings of the mean seconds per round of `Federation.run()`:", "",
             "| model params | threads | round s | x fastest | each sitting |", "|---|---|---|---|---|"]
    for r in rows:
        each = ", ".join(f"{v:.2f}" for v in r["round_seconds_all"])
        lines.append(f"| {r['params']:,} | {r['threads']} | {r['round_seconds']:.3f} | {r['x_fastest']:.2f} | "
                     f"{each} |")
    return "\n".join(lines) + "\n"
