"""The round loop's privacy bookkeeping: budget checks before a round, the ledger after it.

Per client: DP-SGD events of its local training, and the client-level events of every aggregate it
contributed to. Population: the client-level events of every round (for example-level DP-SGD alone, the
population's epsilon is the largest client's, since each example belongs to one client).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from dp.errors import DPError
from dp.events import PrivacyEvent
from dp.ledger import LEDGER_NAME, POPULATION, Party, PrivacyLedger
from federation.checkpoint import atomic_write_bytes, writing
from federation.errors import CheckpointError
from federation.records import IN_FLIGHT_NAME
from federation.client import FederatedClient
from federation.runtime import RoundOutcome

if TYPE_CHECKING:
    from federation.records import RoundRecord

log = logging.getLogger(__name__)



@dataclass
class PrivacyBook:
    """``planned_population`` are the client-level events a round is expected to emit (checked in advance)."""

    ledger: PrivacyLedger
    directory: Path | None = None
    planned_population: tuple[PrivacyEvent, ...] = ()
    declined: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.directory is not None:
            self.directory = Path(self.directory)

    @property
    def path(self) -> Path | None:
        return self.directory / LEDGER_NAME if self.directory is not None else None

    @property
    def in_flight(self) -> Path | None:
        return self.directory / IN_FLIGHT_NAME if self.directory is not None else None

    def begin(self, round_index: int, participants: Sequence[int], clients: Mapping[int, FederatedClient],
              eligible: Sequence[int] | None = None) -> None:
        """Before round ``round_index`` sends anything, persist everything it could spend: each participant's
        own events and the round's client-level events (for every participant, or under Poisson sampling every
        ``eligible`` client, and the population). A process that dies mid-round, after the server saw uploads
        or a sum but before :meth:`record`, is charged for it when the run resumes (:meth:`resume`): a crash
        may over-count, never under-count."""
        if self.in_flight is None:
            return
        import json

        trained = set(participants)  # under Poisson sampling drawn from the eligible ones
        spend = [[c, [e.describe() for e in (*(clients[c].planned_events() if c in trained else ()),
                                             *self.planned_population)]]
                 for c in sorted(trained if eligible is None else trained | set(eligible))]
        if self.planned_population:
            spend.append([POPULATION, [e.describe() for e in self.planned_population]])
        with writing(self.in_flight):
            atomic_write_bytes(self.in_flight, json.dumps({"round": round_index, "spend": spend}).encode())

    def _charge_in_flight(self, ledger: PrivacyLedger, done: int) -> None:
        """A round that was under way when the process died (its in-flight record, and nothing of it in the
        ledger) is charged as planned, then run again (and charged again) on resume."""
        import json

        from dp.events import event_from_dict

        if self.in_flight is None or not self.in_flight.exists():
            return
        try:
            doc = json.loads(self.in_flight.read_text())
            round_index = int(doc["round"])
            spend = {(POPULATION if party == POPULATION else int(party)): [event_from_dict(e) for e in events]
                     for party, events in doc["spend"]}
        except (OSError, ValueError, KeyError, TypeError, DPError) as err:
            raise CheckpointError(f"cannot resume: unreadable {self.in_flight} ({err}): it records what the round "
                                  "under way when the run stopped may have spent") from None
        if round_index == done + 1 and not any(r == round_index for r, _, _ in ledger.entries):
            log.warning("round %d was under way when the run stopped: charged as planned, and again when it "
                        "runs now (over-counting, never under-counting)", round_index)
            assert self.path is not None
            with writing(self.path):
                ledger.commit(round_index, spend, self.path)
        with writing(self.in_flight):
            self.in_flight.unlink()

    def resume(self, completed: Sequence[RoundRecord]) -> None:
        """Continue the ledger on disk after the checkpoint's ``completed`` rounds: spent budget is never
        forgotten. A missing, unreadable or stale ledger (one that lacks releases the checkpoint shows) is
        refused with :class:`CheckpointError`; entries of the one round after the checkpoint (committed, then
        the process died before its checkpoint) are kept, and that round's rerun is charged again."""
        expected = {r.round: expected_entries(r) for r in completed}
        expected = {r: n for r, n in expected.items() if n}
        done = max((r.round for r in completed), default=0)
        if self.path is None or not self.path.exists():
            if expected:
                raise CheckpointError(
                    f"the checkpoint holds {len(expected)} rounds with privacy releases but there is no ledger "
                    f"({self.path}): resuming would forget their budget; restore the ledger.json of this run")
            self._charge_in_flight(self.ledger, done)
            return
        try:
            on_disk = PrivacyLedger.load(self.path)
        except DPError as err:
            raise CheckpointError(f"cannot resume: {err}; restore the ledger.json of this run") from None
        found: dict[int, Counter] = {}
        for r, _, index in on_disk.entries:
            found.setdefault(r, Counter())[_key(on_disk.events[index].describe())] += 1
        wrong = sorted(r for r in set(expected) | {r for r in found if r <= done}
                       if found.get(r, Counter()) != expected.get(r, Counter()))
        later = sorted(r for r in found if r > done + 1)
        if wrong or later:
            raise CheckpointError(
                f"the ledger does not match the checkpoint's {done} completed rounds (rounds {wrong + later} "
                "differ in what was charged): it belongs to another run or an older state of this one; restore "
                "the matching ledger")
        self._charge_in_flight(on_disk, done)  # only into the ledger that matches: a refused one keeps the record
        if found.get(done + 1):
            log.warning("round %d was charged to the ledger before the run stopped; it is charged again when "
                        "it runs now (over-counting, never under-counting)", done + 1)
        on_disk.delta, on_disk.max_epsilon = self.ledger.delta, self.ledger.max_epsilon
        self.ledger = on_disk

    def population_allows_another_round(self) -> bool:
        if self.planned_population and not self.ledger.within_budget(POPULATION, self.planned_population):
            log.warning("population budget of epsilon=%s reached: stopping", self.ledger.max_epsilon)
            return False
        return True

    def admit(self, round_index: int, sampled: tuple[int, ...], clients: Mapping[int, FederatedClient]
              ) -> tuple[int, ...]:
        """The sampled clients whose budget allows this round; the others decline (check-then-commit)."""
        admitted, declined = [], []
        for c in sampled:
            planned = clients[c].planned_events() + self.planned_population
            (admitted if self.ledger.within_budget(c, planned) else declined).append(c)
        if declined:
            log.warning("round %d: clients %s decline: over their privacy budget", round_index, declined)
            self.declined[round_index] = declined
        return tuple(admitted)

    def record(self, round_index: int, outcome: RoundOutcome, eligible: Sequence[int] | None = None) -> None:
        """Commit the round's releases to the ledger (persisted) before its result is released; ``eligible``:
        under Poisson client sampling, the clients that could have been drawn.

        A ledger that cannot be written raises :class:`OutputError`: the round's result must not be released.
        """
        spend: dict[Party, list[PrivacyEvent]] = {}
        for c, report in outcome.clients.items():
            if report.events:
                spend.setdefault(c, []).extend(report.events)
        if outcome.result is not None and outcome.events:
            # Poisson sampling: every client that could have been drawn is charged (its inclusion is the secret
            # amplification rests on); fixed-size: the contributors (the others' data was not used)
            for c in (eligible if eligible is not None else outcome.result.contributors):
                spend.setdefault(c, []).extend(outcome.events)  # type: ignore[arg-type]
            spend[POPULATION] = list(outcome.events)  # type: ignore[arg-type]
        if self.path is None:
            self.ledger.commit(round_index, spend, None)
            return
        with writing(self.path):
            self.ledger.commit(round_index, spend, self.path)
        assert self.in_flight is not None
        with writing(self.in_flight):
            self.in_flight.unlink(missing_ok=True)


def expected_entries(record: RoundRecord) -> Counter:
    """The events :meth:`PrivacyBook.record` commits for the round ``record`` describes, each with how many
    parties it was charged to: each client's own events, and, for a released aggregate, the round's events
    for every contributor (Poisson sampling: every eligible client) and the population."""
    out: Counter = Counter()
    for c in record.per_client:
        for event in c.get("privacy_events", ()):
            out[_key(event)] += 1
    if record.status.value == "ok":
        charged = record.survivors if record.charged is None else record.charged
        for event in record.privacy_events:
            out[_key(event)] += charged + 1
    return out


def _key(description: dict) -> str:
    """An event description as a comparable key (the event as the ledger re-reads it, so defaults agree)."""
    import json

    from dp.events import event_from_dict

    return json.dumps(event_from_dict(description).describe(), sort_keys=True)
