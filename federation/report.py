"""What a run leaves in its output directory: results.json, a plot of accuracy and loss, a summary table.

results.json::

    {"run_id": ..., "config": {...}, "rounds": [RoundRecord.to_dict(), ...], "final": {"accuracy", "loss",
     "rounds", "wall_seconds"}, "privacy": {"unit", "relation", "delta", "epsilon_population", "per_client", ...}}

(written by :meth:`federation.records.History.save`).

Per-round keys: ``round``, ``status`` (ok | aborted), ``accuracy`` and ``loss`` on the global test set after
the round, ``clients`` (sampled ids), ``dropped``, ``rejected``, ``survivors`` (contributors to the aggregate),
``bytes_up`` and ``bytes_down`` (mean bytes per non-dropped sampled client, measured on the serialized messages,
the model broadcast included in bytes_down), ``client_seconds`` (mean per non-dropped client: local training
plus protocol work), ``server_seconds`` (aggregation, unmasking or decryption, and the server optimizer),
``per_client`` (each sampled client's status, examples, ``train_loss`` and ``metrics`` from its training
function, seconds, bytes, privacy events), ``privacy_events`` and ``charged`` (Poisson client sampling: how
many clients the round's events were charged to).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from federation.records import PLOT_NAME, RoundRecord


def plot_history(directory: Path, history: Sequence[RoundRecord]) -> Path:
    """A PNG with test accuracy and loss per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [h.round for h in history if h.accuracy is not None]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(rounds, [h.accuracy for h in history if h.accuracy is not None], marker="o")
    ax_acc.set(xlabel="round", ylabel="test accuracy", title="Accuracy")
    ax_loss.plot(rounds, [h.loss for h in history if h.loss is not None], marker="o", color="tab:red")
    ax_loss.set(xlabel="round", ylabel="test loss", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = Path(directory) / PLOT_NAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_table(history: Sequence[RoundRecord]) -> str:
    """A plain-text table, one row per round."""
    header = ("round", "status", "acc", "loss", "clients", "dropped", "rejected", "KB up", "KB down", "client s",
              "server s")
    rows = [header]
    for h in history:
        rows.append((
            str(h.round), h.status.value,
            "-" if h.accuracy is None else f"{h.accuracy:.4f}",
            "-" if h.loss is None else f"{h.loss:.4f}",
            str(len(h.clients)), str(len(h.dropped)), str(len(h.rejected)),
            f"{h.bytes_up / 1024:.1f}", f"{h.bytes_down / 1024:.1f}",
            f"{h.client_seconds:.3f}", f"{h.server_seconds:.4f}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
