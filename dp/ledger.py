"""The privacy ledger: per-client and population records of every privacy-relevant release.

Each round's spend is checked against the budget first (check), then appended and written atomically to
``ledger.json`` before the round's result is released (commit). A crash therefore never loses spent budget.
A round that is re-run after a crash is recorded again: the first attempt's aggregate did reach the server,
so counting both is the truthful (conservative) account.

File format (columns of integers, so that 1000 clients x 1000 rounds stays small and parses fast)::

    {"version": 4, "delta": d, "max_epsilon": e | null,
     "events": [event description, ...],      # each distinct event once
     "parties": [party, ...],                 # each party once: a client id or "population"
     "rounds": [r, ...], "party": [index into parties, ...], "event": [index into events, ...]}

Entry i says that in round ``rounds[i]`` party ``parties[party[i]]`` spent ``events[event[i]]``. Every event
states its unit (example or client) and neighbour relation (:mod:`dp.events`); one party's entries all share
one unit and relation (composing across them would mean nothing), which :meth:`PrivacyLedger.commit` checks.
Version 3 files (events without unit and relation: each class's default is what they meant) and version 2
files (``"entries": [[round, party, event index], ...]``) are still read.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np

from dp.accounting import RDPAccountant
from dp.errors import InvalidPrivacyParameter
from dp.events import GaussianTerm, Neighbouring, PrivacyEvent, Unit, event_from_dict

POPULATION = "population"
LEDGER_NAME = "ledger.json"
FORMAT_VERSION = 4
Party = Union[int, str]


class PrivacyLedger:
    def __init__(self, delta: float, max_epsilon: float | None = None) -> None:
        if not 0 < delta < 1:
            raise InvalidPrivacyParameter(f"delta must be in (0, 1), got {delta}")
        if max_epsilon is not None and not max_epsilon > 0:
            raise InvalidPrivacyParameter(f"max_epsilon must be positive, got {max_epsilon}")
        self.delta, self.max_epsilon = delta, max_epsilon
        self.events: list[PrivacyEvent] = []
        self._index: dict[PrivacyEvent, int] = {}
        self._rounds: list[int] = []
        self._parties: list[Party] = []
        self._event_of: list[int] = []
        self._columns: tuple[int, tuple[list[Party], np.ndarray, np.ndarray, np.ndarray]] | None = None
        self._terms: dict[Party, Counter[tuple[float, float]]] = {}
        self._bound_only: set[Party] = set()
        self._kinds: dict[Party, tuple[Unit, Neighbouring]] = {}

    def kind(self, party: Party) -> tuple[Unit, Neighbouring] | None:
        """The unit and neighbour relation of ``party``'s entries (None before its first)."""
        return self._kinds.get(party)

    def _check_kind(self, party: Party, event: PrivacyEvent, pending: dict[Party, tuple[Unit, Neighbouring]]) -> None:
        kind = (event.unit, event.relation)
        known = self._kinds.get(party) or pending.setdefault(party, kind)
        if known != kind:
            raise InvalidPrivacyParameter(
                f"party {party!r} has {known[0].value}-level {known[1].value} entries; an event of "
                f"{kind[0].value}-level {kind[1].value} cannot be composed with them")

    def epsilon(self, party: Party) -> float:
        """RDP epsilon at the ledger's delta spent so far by a client id or ``"population"``."""
        return self.accountant(party).epsilon(self.delta)

    def accountant(self, party: Party) -> RDPAccountant:
        return RDPAccountant.of(self._terms.get(party, Counter()), party in self._bound_only)

    def terms(self, party: Party) -> list[GaussianTerm]:
        return self.accountant(party).terms

    def within_budget(self, party: Party, events: Iterable[PrivacyEvent]) -> bool:
        """Whether spending ``events`` keeps ``party`` within ``max_epsilon`` (always true without a budget)."""
        if self.max_epsilon is None:
            return True
        trial = self.accountant(party)
        for event in events:
            trial.compose(event)
        return trial.epsilon(self.delta) <= self.max_epsilon

    def commit(self, round_index: int, spend: Mapping[Party, Iterable[PrivacyEvent]], path: Path | None) -> None:
        """Record a round's releases and, with ``path``, persist the whole ledger atomically."""
        new = [(round_index, _party(party), event) for party, events in spend.items() for event in events]
        pending: dict[Party, tuple[Unit, Neighbouring]] = {}
        for _, party, event in new:  # validate everything before changing anything
            RDPAccountant().compose(event)
            self._check_kind(party, event, pending)
        for r, party, event in new:
            self._add(r, party, self._event_index(event))
        if path is not None:
            self.save(path)

    @property
    def entries(self) -> list[tuple[int, Party, int]]:
        """Every record as ``(round, party, event index)``, in the order committed."""
        return list(zip(self._rounds, self._parties, self._event_of))

    def columns(self) -> tuple[list[Party], np.ndarray, np.ndarray, np.ndarray]:
        """The distinct parties, and per entry its round, its party's index among them and its event index
        (kept until the next commit)."""
        if self._columns is None or self._columns[0] != len(self._rounds):
            index: dict[Party, int] = {}
            party_index = np.fromiter((index.setdefault(p, len(index)) for p in self._parties), dtype=np.int64,
                                      count=len(self._parties))
            self._columns = (len(self._rounds), (list(index), np.asarray(self._rounds, dtype=np.int64), party_index,
                                                 np.asarray(self._event_of, dtype=np.int64)))
        return self._columns[1]

    def parties(self) -> list[Party]:
        return sorted(self._terms, key=lambda p: (isinstance(p, str), p))

    def _event_index(self, event: PrivacyEvent) -> int:
        if event not in self._index:
            self._index[event] = len(self.events)
            self.events.append(event)
        return self._index[event]

    def _add(self, round_index: int, party: Party, index: int) -> None:
        self._rounds.append(round_index)
        self._parties.append(party)
        self._event_of.append(index)
        self._compose(party, index, 1)

    def _compose(self, party: Party, index: int, times: int) -> None:
        counter = self._terms.setdefault(party, Counter())
        event = self.events[index]
        self._check_kind(party, event, {})
        self._kinds.setdefault(party, (event.unit, event.relation))
        for z, q, n in event.terms():
            counter[(z, q)] += n * times
        if event.rdp_bound_only:
            self._bound_only.add(party)

    def to_dict(self) -> dict[str, Any]:
        parties, rounds, party_index, event_of = self.columns()
        return {"version": FORMAT_VERSION, "delta": self.delta, "max_epsilon": self.max_epsilon,
                "events": [e.describe() for e in self.events], "parties": parties, "rounds": rounds.tolist(),
                "party": party_index.tolist(), "event": event_of.tolist()}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, separators=(",", ":"))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> PrivacyLedger:
        try:
            data = json.loads(Path(path).read_text())
            version = data.get("version")
            if version == 2:
                entries = data["entries"]
                data["rounds"] = [e[0] for e in entries]
                data["parties"] = sorted({e[1] for e in entries}, key=str)
                where = {p: i for i, p in enumerate(data["parties"])}
                data["party"] = [where[e[1]] for e in entries]
                data["event"] = [e[2] for e in entries]
            elif version not in (3, FORMAT_VERSION):
                raise InvalidPrivacyParameter(f"unsupported ledger version {version}")
            ledger = cls(float(data["delta"]), data.get("max_epsilon"))
            for description in data["events"]:
                ledger._event_index(event_from_dict(description))
            ledger._add_columns([_party(p) for p in data["parties"]], data["rounds"], data["party"], data["event"])
            return ledger
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
            raise InvalidPrivacyParameter(f"unreadable ledger {path}: {err}") from None

    def _add_columns(self, parties: list[Party], rounds: list[int], party: list[int], event: list[int]) -> None:
        """Validate and add stored columns; each distinct (party, event) pair is composed once, with its count
        (a ledger of 1000 clients x 1000 rounds has a million entries and a few thousand distinct pairs)."""
        if len(set(parties)) != len(parties):
            raise InvalidPrivacyParameter("a party is listed twice")
        columns = [np.asarray(c) for c in (rounds, party, event)]
        if any(c.ndim != 1 or len(c) != len(rounds) or (len(c) and c.dtype.kind != "i") for c in columns):
            raise InvalidPrivacyParameter("ledger columns must be integer lists of one length")
        r, p, e = (c.astype(np.int64) for c in columns)
        if len(r) and (p.min() < 0 or p.max() >= len(parties) or e.min() < 0 or e.max() >= len(self.events)):
            raise InvalidPrivacyParameter("a ledger entry names an unknown party or event")
        self._rounds.extend(r.tolist())
        self._parties.extend(parties[i] for i in p.tolist())
        self._event_of.extend(e.tolist())
        pairs, counts = np.unique(p * len(self.events) + e, return_counts=True)
        for pair, times in zip(pairs.tolist(), counts.tolist()):
            self._compose(parties[pair // len(self.events)], pair % len(self.events), times)


def _party(value: Any) -> Party:
    if value == POPULATION:
        return POPULATION
    if isinstance(value, int) and value >= 0 and not isinstance(value, bool):
        return value
    raise InvalidPrivacyParameter(f"bad ledger party {value!r}")


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
