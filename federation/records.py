"""The round's data model and a run's history: what ``Federation.run()`` returns and ``save(DIR)`` writes.

``History`` is the list of :class:`RoundRecord` (one per round, resumed ones included) with queries
(accuracy per round, epsilon per client and for the population at any delta) and :meth:`History.save`,
which writes the same files as ``secagg run``: ``results.json``, ``metrics.png`` and, with DP, ``ledger.json``,
so ``secagg audit DIR`` works on a notebook run.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from federation.errors import ConfigError

if TYPE_CHECKING:
    from dp.ledger import PrivacyLedger
    from federation.runtime import RoundOutcome

RESULTS_NAME = "results.json"
PLOT_NAME = "metrics.png"
# What a run leaves in its directory: another run's files there are never replaced without overwrite=True.
IN_FLIGHT_NAME = "ledger.in-flight.json"  # what the round under way may spend (see PrivacyBook.begin)
RUN_FILES = ("results.json", "ledger.json", "checkpoint.npz", "metrics.png", "model.npz", IN_FLIGHT_NAME)


class RoundStatus(enum.Enum):
    OK = "ok"
    ABORTED = "aborted"


@dataclass(frozen=True)
class RoundRecord:
    """What one round did; ``to_dict`` is the row written to results.json."""

    round: int
    status: RoundStatus
    accuracy: float | None
    loss: float | None
    clients: list[int]
    dropped: list[int]
    rejected: list[int]
    survivors: int
    bytes_up: float
    bytes_down: float
    client_seconds: float
    server_seconds: float
    per_client: list[dict[str, Any]]
    privacy_events: list[dict[str, Any]]
    abort_reason: str | None = None
    charged: int | None = None  # Poisson client sampling: how many clients the round's events were charged to

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d


def record_from_dict(d: dict[str, Any]) -> RoundRecord:
    return RoundRecord(**{**d, "status": RoundStatus(d["status"])})


def round_record(r: int, sampled: tuple[int, ...], outcome: RoundOutcome, server_seconds: float,
                 accuracy: float | None, loss: float | None, charged: int | None = None) -> RoundRecord:
    """The record of round ``r``: its outcome's per-client reports summarized (means over the clients that did
    not drop), with every client's row and every privacy event."""
    import numpy as np

    from dp.events import PrivacyEvent
    from federation.runtime import ClientReport, ClientStatus

    reports = list(outcome.clients.values())
    active = [c for c in reports if c.status is not ClientStatus.DROPPED] or reports or [ClientReport(-1)]
    for event in outcome.events:
        if not isinstance(event, PrivacyEvent):
            raise TypeError(f"aggregator emitted {type(event).__name__}, not a PrivacyEvent")
    return RoundRecord(
        round=r,
        status=RoundStatus.OK if outcome.result is not None else RoundStatus.ABORTED,
        accuracy=accuracy,
        loss=loss,
        clients=list(sampled),
        dropped=[c.client for c in reports if c.status is ClientStatus.DROPPED],
        rejected=[c.client for c in reports if c.status is ClientStatus.REJECTED],
        survivors=len(outcome.result.contributors) if outcome.result is not None else 0,
        bytes_up=float(np.mean([c.bytes_up for c in active])),
        bytes_down=float(np.mean([c.bytes_down for c in active])),
        client_seconds=float(np.mean([c.seconds for c in active])),
        server_seconds=server_seconds,
        per_client=[{**{k: v for k, v in asdict(c).items() if k != "events"}, "status": c.status.value,
                     "privacy_events": [e.describe() for e in c.events]} for c in reports],
        privacy_events=[e.describe() for e in outcome.events],  # type: ignore[attr-defined]
        abort_reason=outcome.abort_reason,
        charged=charged,
    )


class History(list):
    """The rounds of a run (a list of :class:`RoundRecord`), with the run's settings and privacy ledger."""

    def __init__(self, records: Iterable[RoundRecord] = (), *, config: dict[str, Any] | None = None,
                 ledger: PrivacyLedger | None = None, wall_seconds: float = 0.0, run_id: str = "") -> None:
        super().__init__(records)
        self.config = config or {}
        self.run_id = run_id
        self.ledger = ledger
        self.wall_seconds = wall_seconds
        self.declined: dict[int, list[int]] = {}

    @property
    def accuracy(self) -> list[float | None]:
        """Test accuracy after each round (None where there is no test set)."""
        return [r.accuracy for r in self]

    @property
    def loss(self) -> list[float | None]:
        return [r.loss for r in self]

    @property
    def final_accuracy(self) -> float | None:
        return self[-1].accuracy if self else None

    def client_metrics(self, name: str = "loss") -> dict[int, list[tuple[int, float]]]:
        """Per client: (round, value) of a metric its training function reported (``loss``: the train loss)."""
        out: dict[int, list[tuple[int, float]]] = {}
        for r in self:
            for c in r.per_client:
                value = c.get("metrics", {}).get(name)
                if value is not None:
                    out.setdefault(int(c["client"]), []).append((r.round, float(value)))
        return out

    def epsilon(self, client: int | None = None, *, delta: float | None = None) -> float:
        """Epsilon spent so far (RDP) by ``client``, or by the population when ``client`` is None, at ``delta``
        (default: the run's). Example-level DP-SGD alone: the population's is the largest client's (each
        example belongs to one client). 0.0 for a client with nothing recorded."""
        if self.ledger is None:
            raise ConfigError("this run recorded no privacy ledger: it ran without dp=")
        from dp.ledger import POPULATION

        delta = self.ledger.delta if delta is None else delta
        parties = self.ledger.parties()
        if client is None:
            if POPULATION in parties:
                return self.ledger.accountant(POPULATION).epsilon(delta)
            return max((self.ledger.accountant(p).epsilon(delta) for p in parties), default=0.0)
        return self.ledger.accountant(client).epsilon(delta) if client in parties else 0.0

    def privacy_summary(self) -> dict[str, Any] | None:
        """The ``privacy`` block of results.json: the unit (example or client) and neighbour relation its epsilons
        are for, the population's epsilon and each client's."""
        if self.ledger is None:
            return None
        from dp.ledger import POPULATION, finite

        parties = self.ledger.parties()
        per_client = {str(p): finite(self.ledger.epsilon(p)) for p in parties if p != POPULATION}
        kinds = {self.ledger.kind(p) for p in parties} - {None}
        unit = sorted({k[0].value for k in kinds})  # type: ignore[index]
        relation = sorted({k[1].value for k in kinds})  # type: ignore[index]
        return {"unit": unit[0] if len(unit) == 1 else unit, "relation": relation[0] if len(relation) == 1 else relation,
                "delta": self.ledger.delta, "epsilon_population": finite(self.epsilon()), "per_client": per_client,
                "max_epsilon": self.ledger.max_epsilon,
                "declined": {str(r): cs for r, cs in self.declined.items()}}

    def document(self) -> dict[str, Any]:
        """results.json: ``config``, ``rounds``, ``final`` and, with DP, ``privacy``."""
        last = self[-1] if self else None
        doc: dict[str, Any] = {
            "run_id": self.run_id,
            "config": self.config,
            "rounds": [h.to_dict() for h in self],
            "final": {"accuracy": last.accuracy if last else None, "loss": last.loss if last else None,
                      "rounds": len(self), "wall_seconds": self.wall_seconds},
        }
        privacy = self.privacy_summary()
        if privacy is not None:
            doc["privacy"] = privacy
        return doc

    def save(self, directory: Path | str, *, overwrite: bool = False, plot: bool = True) -> Path:
        """Write results.json, ledger.json (with DP) and metrics.png into ``directory``. A directory holding
        another run's files is refused unless ``overwrite`` (then all of them are removed first, so no other
        run's ledger stays beside these results): a privacy record is never silently replaced (the same run
        may save again, e.g. after every round)."""
        import json

        from federation.checkpoint import atomic_write_bytes, writing

        directory = Path(directory)
        if not overwrite:
            refuse_other_run(directory, self.run_id)
        elif stored_run_id(directory) != self.run_id:  # replacing another run: none of its files may remain
            for name in RUN_FILES:
                with writing(directory / name):
                    (directory / name).unlink(missing_ok=True)
        with writing(directory):
            directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / RESULTS_NAME, json.dumps(self.document(), indent=2).encode())
        if self.ledger is not None:
            from dp.ledger import LEDGER_NAME

            with writing(directory / LEDGER_NAME):
                self.ledger.save(directory / LEDGER_NAME)
        if plot and self:
            from federation.report import plot_history

            with writing(directory / PLOT_NAME):
                plot_history(directory, self)
        return directory


def refuse_other_run(directory: Path, run_id: str | None = None, ignore: tuple[str, ...] = ()) -> None:
    """Refuse ``directory`` when it holds the files (but those in ``ignore``) of another run than ``run_id``
    (None: of any run)."""
    present = [name for name in RUN_FILES if name not in ignore and (directory / name).exists()]
    if not present:
        return
    if not run_id or stored_run_id(directory) != run_id:
        raise ConfigError(f"{directory} holds another run's {', '.join(present)}: pass overwrite=True "
                          "(--overwrite) to replace them, resume=True (--resume) to continue that run, or choose "
                          "another directory")


def stored_run_id(directory: Path) -> str | None:
    """The id of the run whose results (or, before its first results, checkpoint) ``directory`` holds."""
    import json

    from federation import checkpoint
    from federation.errors import CheckpointError

    try:
        return str(json.loads((directory / RESULTS_NAME).read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return checkpoint.load(directory).run_id or None
    except CheckpointError:
        return None
