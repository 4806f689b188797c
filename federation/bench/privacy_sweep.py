"""``secagg bench --privacy``: accuracy against epsilon on the default job, over a sweep of noise multipliers.

Each point is one run of the default job (``ExperimentConfig()`` with the given rounds and seed) under DP-SGD
(example level) or central DP (client level), through the public API; its epsilon is the run's population
epsilon at delta 1e-5 from the ledger, and the no-DP accuracy is the reference line.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from federation.experiment import build_federation
from federation.experiment_config import ExperimentConfig, PrivacySettings
from federation.modes import DPMode

NOISE_MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)


def run_privacy_sweep(noise_multipliers: Sequence[float] = NOISE_MULTIPLIERS, *, rounds: int = 20, seed: int = 0,
                      modes: Sequence[DPMode] = (DPMode.LOCAL, DPMode.CENTRAL)) -> list[dict[str, Any]]:
    """One row per (mode, z), plus the no-DP reference: final accuracy and population epsilon."""
    base = replace(ExperimentConfig(), rounds=rounds, seed=seed)
    rows = [{"dp": "none", "noise_multiplier": None, **_run(base)}]
    for mode in modes:
        for z in noise_multipliers:
            config = replace(base, dp=mode, privacy=PrivacySettings(noise_multiplier=z, clip=1.0))
            rows.append({"dp": mode.value, "noise_multiplier": z, **_run(config)})
    return rows


def _run(config: ExperimentConfig) -> dict[str, Any]:
    federation = build_federation(config)
    history = federation.run()
    return {"rounds": config.rounds, "final_accuracy": history.final_accuracy,
            "epsilon": history.epsilon() if history.ledger is not None else None,
            "unit": (history.privacy_summary() or {}).get("unit")}


def privacy_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["Privacy-utility (default job; epsilon: the population's at delta 1e-5; local = DP-SGD, example "
             "level; central = client level, replace-with-zero neighbours):", "",
             "| DP | z | epsilon | final accuracy |", "|---|---|---|---|"]
    for r in rows:
        z, eps = r["noise_multiplier"], r["epsilon"]
        lines.append(f"| {r['dp']} | {'-' if z is None else z} | {'-' if eps is None else f'{eps:.3g}'} | "
                     f"{r['final_accuracy']:.4f} |")
    return "\n".join(lines) + "\n"


def plot_privacy(out: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """privacy_utility.png: accuracy against epsilon per DP mode, the no-DP accuracy as a line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for mode in sorted({r["dp"] for r in rows} - {"none"}):
        points = sorted((r["epsilon"], r["final_accuracy"]) for r in rows if r["dp"] == mode)
        ax.plot(*zip(*points), marker="o", label=f"{mode} DP")
    reference = [r["final_accuracy"] for r in rows if r["dp"] == "none"]
    if reference:
        ax.axhline(reference[0], color="gray", linestyle="--", label="no DP")
    ax.set(xscale="log", xlabel="epsilon (delta = 1e-5)", ylabel="final test accuracy",
           title="Privacy-utility, default job")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(out) / "privacy_utility.png"
    fig.savefig(path, dpi=100)
    return path
