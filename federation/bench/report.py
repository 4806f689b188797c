"""bench.json and bench.md: the rows of a benchmark run, as data and as a table."""

from __future__ import annotations

import importlib
import json
import platform
from pathlib import Path
from typing import Any, Sequence

from federation.checkpoint import atomic_write_bytes

_COLUMNS = [
    ("mode", "mode", "{}"), ("params", "params", "{}"), ("clients", "clients", "{}"), ("dropout", "dropout", "{}"),
    ("round s", "round_seconds", "{:.3f}"), ("client s", "client_seconds", "{:.5f}"),
    ("server s", "server_seconds", "{:.4f}"), ("up B/client", "bytes_up_per_client", "{:.0f}"),
    ("expansion", "expansion", "{:.4f}"), ("max abs err", "max_abs_error", "{:.2e}"),
    ("mask/PRG", "masking_ratio", "{:.2f}"), ("unmask/PRG", "unmask_ratio", "{:.2f}"),
    ("key holder s", "key_holder_seconds", "{:.4f}"), ("B/param", "bytes_per_param", "{:.2f}"),
    ("enc params/s", "encrypt_params_per_second", "{:.3g}"), ("peak MiB", "peak_memory_mib", "{:.0f}"),
]


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}


# The sections a bench run may add after its rows: name -> (module, its markdown function, its plot function or
# None), each imported only when the run has that section; in this order in bench.md.
_SECTIONS = {
    "audit": ("federation.bench.audit_bench", "audit_markdown", None),
    "end_to_end": ("federation.bench.report", "end_to_end_markdown", None),
    "privacy": ("federation.bench.privacy_sweep", "privacy_markdown", "plot_privacy"),
    "threads": ("federation.bench.threads", "threads_markdown", None),
    "memory": ("federation.bench.memory", "memory_markdown", "plot_memory"),
}


def write(out: Path, rows: Sequence[dict[str, Any]], command: str, **sections: Any) -> None:
    """bench.json and bench.md of ``rows`` and any of the :data:`_SECTIONS` (``audit=``, ``memory=``, ...)."""
    unknown = set(sections) - set(_SECTIONS)
    if unknown:
        raise TypeError(f"unknown bench sections {sorted(unknown)}")
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"command": command, "machine": machine(), "results": list(rows)}
    text = markdown(rows, command)
    for name, (module_name, markdown_name, plot_name) in _SECTIONS.items():
        data = sections.get(name)
        if data is None:
            continue
        module = importlib.import_module(module_name)
        doc[name] = data if isinstance(data, dict) else list(data)
        text += "\n" + getattr(module, markdown_name)(data)
        if plot_name is not None:
            getattr(module, plot_name)(out, data)
    atomic_write_bytes(out / "bench.json", json.dumps(doc, indent=2).encode())
    atomic_write_bytes(out / "bench.md", text.encode())
    if rows:
        from federation.bench.plots import plot_all

        plot_all(out, rows)


def end_to_end_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["End to end (default job, mean wall seconds per round, training included; DP local = DP-SGD in "
             "every client, z=1, clip 1; DP distributed = client-level noise shares from all 10 clients, z=1, "
             "clip 1):", "",
             "| mode | DP | round s | x plaintext | final accuracy | up B/client | epsilon |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        eps = r.get("epsilon")
        lines.append(f"| {r['mode']} | {r.get('dp', 'none')} | {r['round_seconds']:.4f} | "
                     f"{r['ratio_to_plaintext']:.2f} | {r['final_accuracy']:.4f} | {r['bytes_up_per_client']:.0f} | "
                     f"{'-' if eps is None else f'{eps:.2f}'} |")
    return "\n".join(lines) + "\n"


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if key == "peak_memory_mib" and "peak_memory_bytes" in row:
        value = row["peak_memory_bytes"] / 2**20
    if value is None:
        return "-"
    if isinstance(value, dict):
        value = value["median"]
    return fmt.format(value)


def markdown(rows: Sequence[dict[str, Any]], command: str) -> str:
    if not rows:
        return f"`{command}`\n"
    lines = [f"`{command}`", "", "Times are medians over the repeats; client s is per client.", "",
             "| " + " | ".join(h for h, _, _ in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, key, fmt) for _, key, fmt in _COLUMNS) + " |")
    return "\n".join(lines) + "\n"
