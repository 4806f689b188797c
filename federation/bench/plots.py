"""PNG plots of a benchmark run: time against clients, time against parameters, bytes per parameter by mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def _median(value: Any) -> float:
    return value["median"] if isinstance(value, dict) else float(value)


def plot_all(out: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    modes = sorted({r["mode"] for r in rows})
    for x_key, name in (("clients", "time_vs_clients.png"), ("params", "time_vs_params.png")):
        other = "params" if x_key == "clients" else "clients"
        fig, ax = plt.subplots(figsize=(6, 4))
        for mode in modes:
            for fixed in sorted({r[other] for r in rows if r["mode"] == mode}):
                pts = sorted((r[x_key], _median(r["round_seconds"])) for r in rows
                             if r["mode"] == mode and r[other] == fixed and r["dropout"] == min(
                                 q["dropout"] for q in rows))
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=f"{mode}, {other}={fixed:g}")
        ax.set(xscale="log", yscale="log", xlabel=x_key, ylabel="round seconds (all parties)",
               title=f"Round time against {x_key}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)
    fig, ax = plt.subplots(figsize=(5, 4))
    per_param = [max(r["input_bytes_per_client"] / r["params"] for r in rows if r["mode"] == m) for m in modes]
    ax.bar(modes, per_param, color=["tab:gray", "tab:blue", "tab:orange", "tab:green"][: len(modes)])
    ax.axhline(4, color="black", lw=0.8, ls="--", label="float32")
    ax.set(ylabel="upload bytes per parameter", title="Upload size by mode")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bytes_per_param.png", dpi=100)
    plt.close(fig)
    paths.append(out / "bytes_per_param.png")
    return paths
