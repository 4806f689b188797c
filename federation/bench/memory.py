"""``secagg bench --memory``: the server's peak memory and seconds for one round, against the number of clients.

The server session runs in a process of its own, forked before any client exists, so its memory is the
server's alone: the growth of its resident set (``VmHWM`` after the round, the peak reset by
``/proc/self/clear_refs`` at the start, minus ``VmRSS`` at the start) counts NumPy buffers and SEAL's C++
ciphertexts alike, which tracemalloc would not. The clients run in this process and reach the server
through a pipe, one message at a time. The server process pins glibc's mmap threshold
(:mod:`federation.allocator`), as a long-lived aggregator should. Their updates are drawn per client from the seed (uniform in
[-0.5, 0.5]) and summed on the fly for the error, so nothing here holds clients x parameters either;
multi-stage CKKS client sessions wait on disk between stages (their ``suspend``/``resume``), as a real
client would keep its own state.
"""

from __future__ import annotations

import multiprocessing as mp
import struct
import tempfile
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from federation.allocator import pin_mmap_threshold
from federation.bench.modes import BenchMode
from federation.bench.runner import make_aggregator
from federation.errors import ConfigError
from secagg.aggregation import Aggregator, RoundContext

_COLLECT, _CLOSE, _RESULT = 1, 2, 3


@dataclass(frozen=True)
class MemoryCase:
    mode: BenchMode
    params: int
    clients: int

    def __post_init__(self) -> None:
        if self.params < 1 or self.clients < 2:
            raise ConfigError(f"need at least 1 parameter and 2 clients, got {self.params} and {self.clients}")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise ConfigError(f"/proc/self/status has no {field}: the memory bench needs Linux")


def _serve(conn: Connection, aggregator: Aggregator, ctx: RoundContext) -> None:
    """The server's process: collect, close stages, release; then report its peak memory growth."""
    pin_mmap_threshold()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current resident set
    except OSError:
        pass
    base = _status("VmRSS")
    server = aggregator.server_session(ctx)
    seconds = 0.0
    while True:
        frame = conn.recv_bytes()
        op, client = struct.unpack_from(">BI", frame)
        t0 = time.perf_counter()
        if op == _COLLECT:
            server.collect(client, memoryview(frame)[5:])
            seconds += time.perf_counter() - t0
            del frame
            continue
        del frame
        if op == _CLOSE:
            replies = server.close_stage()
            seconds += time.perf_counter() - t0
            conn.send_bytes(struct.pack(">BI", int(server.finished), len(replies)))
            for c, message in replies.items():
                conn.send_bytes(struct.pack(">I", c) + message)
            del replies
            continue
        result = server.result()
        seconds += time.perf_counter() - t0
        peak = _status("VmHWM") - base
        conn.send_bytes(struct.pack(">dQdI", seconds, peak, result.total_weight, len(result.contributors))
                        + result.mean.astype(np.float32).tobytes())
        return


def _update(seed: int, client: int, params: int) -> np.ndarray:
    return np.random.default_rng([seed, client]).uniform(-0.5, 0.5, params).astype(np.float32)


class _Clients:
    """The clients' sessions between stages: CKKS ones suspended to files (each keeps its upload's
    coefficients, 16 bytes per parameter), the others in memory; none after a single-stage protocol."""

    def __init__(self, aggregator: Aggregator, ctx: RoundContext, spill: Path) -> None:
        self.aggregator, self.ctx, self.spill = aggregator, ctx, spill
        self.live: dict[int, Any] = {}

    def keep(self, client: int, session: Any) -> None:
        from secagg.ckks.protocol import CKKSClient

        if isinstance(session, CKKSClient):
            (self.spill / str(client)).write_bytes(session.suspend())
        elif self.aggregator.stages > 1:
            self.live[client] = session

    def handle(self, client: int, message: bytes) -> bytes:
        from secagg.ckks.protocol import CKKSClient

        if client in self.live:
            return self.live[client].handle(message)
        path = self.spill / str(client)
        session = CKKSClient.resume(path.read_bytes(), self.ctx, client,
                                    self.aggregator.identities.signing_key(client))  # type: ignore[attr-defined]
        answer = session.handle(message)
        path.write_bytes(session.suspend())
        return answer


def run_memory_case(case: MemoryCase, seed: int = 0) -> dict[str, Any]:
    """One round of ``case`` with the server in its own process; the row of docs/benchmarks.md's memory table."""
    from federation.bench.driver import timed_round

    warm = RoundContext.new(1, (0, 1, 2), 16)  # loads every module the mode uses before the fork: not counted
    timed_round(make_aggregator(case.mode, 3), warm, {c: np.zeros(16, np.float32) for c in warm.clients}, {})
    aggregator = make_aggregator(case.mode, case.clients)
    ctx = RoundContext.new(1, tuple(range(case.clients)), case.params)
    if hasattr(aggregator, "identities"):
        aggregator.identities.enrol(ctx.clients)  # before the fork: both sides know every identity
    ours, theirs = mp.get_context("fork").Pipe()
    server = mp.get_context("fork").Process(target=_serve, args=(theirs, aggregator, ctx), daemon=True)
    started = time.perf_counter()
    server.start()
    theirs.close()
    total = np.zeros(case.params)
    try:
        with tempfile.TemporaryDirectory(prefix="secagg-bench-clients-") as spill:
            clients = _Clients(aggregator, ctx, Path(spill))
            client_seconds = 0.0
            for c in ctx.clients:
                update = _update(seed, c, case.params)
                total += update
                t0 = time.perf_counter()
                session = aggregator.client_session(ctx, c, update, 1.0)
                upload = session.start()
                client_seconds += time.perf_counter() - t0
                ours.send_bytes(struct.pack(">BI", _COLLECT, c) + upload)
                del upload, update
                clients.keep(c, session)
                del session
            while True:
                ours.send_bytes(struct.pack(">BI", _CLOSE, 0))
                finished, count = struct.unpack(">BI", ours.recv_bytes())
                replies = [ours.recv_bytes() for _ in range(count)]
                if finished:
                    break
                for frame in replies:
                    (c,) = struct.unpack_from(">I", frame)
                    t0 = time.perf_counter()
                    answer = clients.handle(c, frame[4:])
                    client_seconds += time.perf_counter() - t0
                    ours.send_bytes(struct.pack(">BI", _COLLECT, c) + answer)
                del replies
            ours.send_bytes(struct.pack(">BI", _RESULT, 0))
            frame = ours.recv_bytes()
    except (EOFError, BrokenPipeError):
        server.join()
        raise ConfigError(f"the server process of {case} died (exit code {server.exitcode}): out of memory?") from None
    server.join()
    round_seconds = time.perf_counter() - started
    seconds, peak, _, contributors = struct.unpack_from(">dQdI", frame)
    mean = np.frombuffer(frame, dtype=np.float32, offset=struct.calcsize(">dQdI"))
    return {**asdict(case), "mode": case.mode.value, "contributors": contributors,
            "server_peak_bytes": int(peak), "server_seconds": seconds, "round_seconds": round_seconds,
            "client_seconds": client_seconds / case.clients,
            "max_abs_error": float(np.abs(mean - total / case.clients).max())}


def memory_markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["Server peak memory (growth of the server process's resident set over one round) and seconds:", "",
             "| mode | params | clients | server peak MiB | x fewest clients | server s | round s | max abs err |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = min((x for x in rows if x["mode"] == r["mode"] and x["params"] == r["params"]),
                   key=lambda x: x["clients"])
        ratio = r["server_peak_bytes"] / max(base["server_peak_bytes"], 1)
        lines.append(f"| {r['mode']} | {r['params']:.0e} | {r['clients']} | {r['server_peak_bytes'] / 2**20:.0f} | "
                     f"{ratio:.2f} | {r['server_seconds']:.2f} | {r['round_seconds']:.1f} | "
                     f"{r['max_abs_error']:.1e} |")
    return "\n".join(lines) + "\n"


def plot_memory(out: Path, rows: Sequence[dict[str, Any]]) -> None:
    """memory.png: server peak MiB and server seconds against clients, a line per mode and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, sec) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, params in sorted({(r["mode"], r["params"]) for r in rows}):
        line = sorted((r for r in rows if r["mode"] == mode and r["params"] == params), key=lambda r: r["clients"])
        xs = [r["clients"] for r in line]
        label = f"{mode} {params:.0e}"
        mem.plot(xs, [r["server_peak_bytes"] / 2**20 for r in line], marker="o", label=label)
        sec.plot(xs, [r["server_seconds"] for r in line], marker="o", label=label)
    for ax, what in ((mem, "server peak MiB"), (sec, "server seconds")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
    mem.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=120)
    plt.close(fig)


__all__ = ["MemoryCase", "memory_markdown", "plot_memory", "run_memory_case"]
