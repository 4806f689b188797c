"""The privacy ledger: per-client and population records of every privacy-relevant release.

Each round's spend is checked against the budget first (check), then appended and written atomically to
``ledger.json`` before the round's result is released (commit). A crash therefore never loses spent budget.
A round that is re-run after a crash is recorded again: the first attempt's aggregate did reach the server,
so counting both is the truthful (conservative) account.

File format (compact, so that 1000 clients x 1000 rounds stays small and fast to audit)::

    {"version": 2, "delta": d, "max_epsilon": e | null,
     "events": [event description, ...],              # each distinct event once
     "entries": [[round, party, event index], ...]}   # party: a client id or "population"
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from dp.accounting import RDPAccountant
from dp.errors import InvalidPrivacyParameter
from dp.events import GaussianTerm, PrivacyEvent, event_from_dict

POPULATION = "population"
LEDGER_NAME = "ledger.json"
FORMAT_VERSION = 2
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
        self.entries: list[tuple[int, Party, int]] = []
        self._terms: dict[Party, Counter[tuple[float, float]]] = {}
        self._bound_only: set[Party] = set()

    def epsilon(self, party: Party) -> float:
        """RDP epsilon at the ledger's delta spent so far by a client id or ``"population"``."""
        return self.accountant(party).epsilon(self.delta)

    def accountant(self, party: Party) -> RDPAccountant:
        accountant = RDPAccountant()
        accountant._terms = self._terms.get(party, Counter()).copy()
        accountant.bound_only = party in self._bound_only
        return accountant

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
        for _, _, event in new:
            RDPAccountant().compose(event)  # validate everything before changing anything
        for r, party, event in new:
            self._add(r, party, self._event_index(event))
        if path is not None:
            self.save(path)

    def parties(self) -> list[Party]:
        return sorted(self._terms, key=lambda p: (isinstance(p, str), p))

    def _event_index(self, event: PrivacyEvent) -> int:
        if event not in self._index:
            self._index[event] = len(self.events)
            self.events.append(event)
        return self._index[event]

    def _add(self, round_index: int, party: Party, index: int) -> None:
        self.entries.append((round_index, party, index))
        counter = self._terms.setdefault(party, Counter())
        event = self.events[index]
        for z, q, n in event.terms():
            counter[(z, q)] += n
        if event.rdp_bound_only:
            self._bound_only.add(party)

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "delta": self.delta, "max_epsilon": self.max_epsilon,
                "events": [e.describe() for e in self.events], "entries": [list(e) for e in self.entries]}

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
            if data.get("version") != FORMAT_VERSION:
                raise InvalidPrivacyParameter(f"unsupported ledger version {data.get('version')}")
            ledger = cls(float(data["delta"]), data.get("max_epsilon"))
            for description in data["events"]:
                ledger._event_index(event_from_dict(description))
            for r, party, index in data["entries"]:
                if not (isinstance(r, int) and isinstance(index, int) and 0 <= index < len(ledger.events)):
                    raise InvalidPrivacyParameter(f"bad ledger entry {[r, party, index]}")
                ledger._add(r, _party(party), index)
            return ledger
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InvalidPrivacyParameter(f"unreadable ledger {path}: {err}") from None


def _party(value: Any) -> Party:
    if value == POPULATION:
        return POPULATION
    if isinstance(value, int) and value >= 0 and not isinstance(value, bool):
        return value
    raise InvalidPrivacyParameter(f"bad ledger party {value!r}")


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
