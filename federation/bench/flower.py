"""``secagg bench --flower``: our runtime on Flower against the smallest plain Flower FedAvg app, in one go.

Each run gets a fresh local deployment (:class:`~federation.flower.launcher.LocalFlower`, a SuperLink and one
SuperNode per client on 127.0.0.1, plus the key holder with CKKS) and trains the same job: sklearn digits,
split evenly (IID) among the clients, a 64-64-10 MLP, 5 local epochs. The runs:

* ``flower-fedavg``: the minimal Flower app (``federation/flower/minimal``) on Flower's own SuperNodes,
  a ClientApp process per message and Flower's polling intervals: what Flower itself costs, the baseline;
* ``flower-fedavg-short-polls``: the same app on our SuperNodes, still a process per message, our polls;
* ``none``, ``mask``, ``ckks``: ``secagg run --runtime flower --secure MODE`` on our SuperNodes (a long-lived
  ClientApp process per node).

A round's time is the wall time from the start of one round to the start of the next (its messages, the
server's aggregation and test-set evaluation): for ours from ``progress.jsonl`` (when each round's first
message went out), for the minimal app from when its ServerApp finished evaluating the previous round. The
first round is left out (warm-up) and the last has no next start, so ``rounds`` measured rounds take
``rounds + 2`` rounds. A round's message exchanges are counted from ``progress.jsonl`` (one per stage), plus
with CKKS the key holder's decryption (from its log); the minimal app has one (train; no client-side
evaluation).
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from federation.errors import ConfigError
from federation.experiment_config import ExperimentConfig
from federation.flower.job import FlowerJob, nodes_needed
from federation.flower.launcher import LocalFlower, NodeKind, client_nodes, flwr_run
from federation.modes import PartitionScheme, SecureMode

MINIMAL_APP = Path(__file__).resolve().parent.parent / "flower" / "minimal"
MINIMAL, MINIMAL_SHORT_POLLS = "flower-fedavg", "flower-fedavg-short-polls"
LOCAL_EPOCHS, LR = 5, 0.1


@dataclass(frozen=True)
class FlowerBenchRow:
    """One run: mean ``round_seconds`` over the measured rounds, message ``exchanges`` per round, and the
    final test ``accuracy``."""

    run: str
    nodes: str
    round_seconds: float
    exchanges: float
    accuracy: float | None
    rounds: list[float]

    @property
    def per_exchange(self) -> float:
        return self.round_seconds / self.exchanges


def _steady(starts: list[float]) -> list[float]:
    """Round times from round start times, without the first round (warm-up)."""
    return [b - a for a, b in zip(starts, starts[1:])][1:]


def run_minimal(out: Path, clients: int, rounds: int, kind: NodeKind) -> FlowerBenchRow:
    """The minimal Flower FedAvg app on a fresh deployment of ``kind`` SuperNodes."""
    with LocalFlower(out, client_nodes(clients, key_holder=False), kind=kind) as flower:
        flwr_run(MINIMAL_APP, {"num-server-rounds": rounds + 2, "num-partitions": clients,
                               "local-epochs": LOCAL_EPOCHS, "lr": LR, "out": str(out / "app")},
                 flower.link, out / "flwr-home", timeout=3600)
    marks = [json.loads(line) for line in (out / "app" / "rounds.jsonl").read_text().splitlines()]
    if len(marks) < rounds + 2:
        raise RuntimeError(f"the minimal Flower app ran {len(marks) - 1} rounds (log: {out / 'flwr-home'})")
    times = _steady([m["time"] for m in marks])[:rounds]  # marks[r]: round r evaluated, round r + 1 starts
    name = MINIMAL if kind is NodeKind.FLOWER else MINIMAL_SHORT_POLLS
    return FlowerBenchRow(name, kind.value, statistics.mean(times), 1.0, marks[-1]["accuracy"], times)


def run_ours(out: Path, mode: SecureMode, clients: int, rounds: int, seed: int) -> FlowerBenchRow:
    """``secagg run --runtime flower --secure mode`` on a fresh deployment of our SuperNodes."""
    config = ExperimentConfig(clients=clients, rounds=rounds + 2, local_epochs=LOCAL_EPOCHS, lr=LR,
                              partition=PartitionScheme.IID, secure=mode, seed=seed)
    job = FlowerJob(config, out / "app")
    with LocalFlower(out, client_nodes(clients, key_holder=nodes_needed(config) > clients)) as flower:
        flower.run(job, timeout=3600)
    marks = [json.loads(line) for line in (job.out / "progress.jsonl").read_text().splitlines()]
    starts = [m["time"] for m in marks if m["stage"] == 0]
    measured = range(2, rounds + 2)
    stages = [m for m in marks if m["stage"] != "end" and m["round"] in measured]
    decryptions = _decryptions(out / f"supernode-{clients}.log", measured) if mode is SecureMode.CKKS else 0
    results = json.loads((job.out / "results.json").read_text())["rounds"]
    times = _steady(starts)
    return FlowerBenchRow(mode.value, NodeKind.LONG_LIVED.value, statistics.mean(times),
                          (len(stages) + decryptions) / rounds, results[-1].get("accuracy"), times)


def _decryptions(log: Path, rounds: range) -> int:
    """The key holder's decryption messages in ``rounds``, from its executor's log (one line per answer)."""
    found = re.findall(r"query\.decrypt of run \d+ \(group (\d+)\) answered", log.read_text())
    return sum(1 for r in found if int(r) in rounds)


def run_flower_bench(out: Path, clients: int = 3, rounds: int = 2, seed: int = 0,
                     modes: tuple[SecureMode, ...] = (SecureMode.NONE, SecureMode.MASK, SecureMode.CKKS),
                     short_polls_baseline: bool = True) -> list[FlowerBenchRow]:
    """Every run in turn, each on its own deployment under ``out``."""
    out = out.resolve()  # the ServerApps write there from a working directory of their own
    rows = [run_minimal(out / MINIMAL, clients, rounds, NodeKind.FLOWER)]
    if short_polls_baseline:
        rows.append(run_minimal(out / MINIMAL_SHORT_POLLS, clients, rounds, NodeKind.PER_MESSAGE))
    rows += [run_ours(out / mode.value, mode, clients, rounds, seed) for mode in modes]
    (out / "flower-bench.json").write_text(json.dumps([{**asdict(r), "per_exchange": r.per_exchange}
                                                       for r in rows], indent=2) + "\n")
    return rows


def markdown(rows: list[FlowerBenchRow], command: str) -> str:
    """The table, with each of our runs set against the minimal Flower app's round (plaintext) and its cost
    for the same number of exchanges (mask, CKKS); the target is at most 1.5 x."""
    base = next(r for r in rows if r.run == MINIMAL)
    lines = [f"`{command}`", "",
             "| run | SuperNodes | exchanges / round | round s | s / exchange | x minimal round | "
             "x minimal for as many exchanges | accuracy |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same_exchanges = r.round_seconds / (base.per_exchange * r.exchanges)
        accuracy = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
        lines.append(f"| {r.run} | {r.nodes} | {r.exchanges:g} | {r.round_seconds:.2f} | {r.per_exchange:.2f} | "
                     f"{r.round_seconds / base.round_seconds:.2f} | {same_exchanges:.2f} | {accuracy} |")
    lines += ["", "Rounds measured (s): " + "; ".join(f"{r.run} " + ", ".join(f"{t:.2f}" for t in r.rounds)
                                                    for r in rows)]
    return "\n".join(lines) + "\n"


def bench_flower(size: str, out: Path, command: str, *, seed: int = 0, quiet: bool = False) -> int:
    """``secagg bench --flower CLIENTSxROUNDS``: run everything, write ``flower-bench.md`` in ``out``."""
    try:
        clients, rounds = (int(part) for part in size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--flower {size!r}: expected CLIENTSxROUNDS, e.g. 3x2") from None
    if clients < 2 or rounds < 1:
        raise ConfigError(f"--flower {size!r}: needs at least 2 clients and 1 measured round")
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(run_flower_bench(out, clients, rounds, seed), command)
    (out / "flower-bench.md").write_text(text)
    if not quiet:
        print(text)
    return 0
