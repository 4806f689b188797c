"""The privacy ledger: per-client and population records of every privacy-relevant release.

Each round's spend is checked against the budget first (check), then appended and written atomically to
``ledger.json`` before the round's result is released (commit). A crash therefore never loses spent budget.
A round that is re-run after a crash is recorded again: the first attempt's aggregate did reach the server,
so counting both is the truthful (conservative) account.

File format: ``{"version": 1, "delta": d, "max_epsilon": e | null, "entries": [{"round": r, "party":
"population" | client id, "event": event description}]}``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from dp.accounting import RDPAccountant
from dp.errors import InvalidPrivacyParameter
from dp.events import PrivacyEvent, event_from_dict

POPULATION = "population"
LEDGER_NAME = "ledger.json"
Party = Union[int, str]


@dataclass
class PrivacyLedger:
    delta: float
    max_epsilon: float | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            raise InvalidPrivacyParameter(f"delta must be in (0, 1), got {self.delta}")
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise InvalidPrivacyParameter(f"max_epsilon must be positive, got {self.max_epsilon}")
        self._accountants: dict[Party, RDPAccountant] = {}
        for entry in self.entries:
            self._account(entry["party"], event_from_dict(entry["event"]))

    def epsilon(self, party: Party) -> float:
        """RDP epsilon at the ledger's delta spent so far by a client id or ``"population"``."""
        accountant = self._accountants.get(party)
        return accountant.epsilon(self.delta) if accountant else 0.0

    def within_budget(self, party: Party, events: Iterable[PrivacyEvent]) -> bool:
        """Whether spending ``events`` keeps ``party`` within ``max_epsilon`` (always true without a budget)."""
        if self.max_epsilon is None:
            return True
        trial = RDPAccountant()
        for z, q, n in (self._accountants[party].terms if party in self._accountants else []):
            trial._terms[(z, q)] += n
        for event in events:
            trial.compose(event)
        return trial.epsilon(self.delta) <= self.max_epsilon

    def commit(self, round_index: int, spend: Mapping[Party, Iterable[PrivacyEvent]], path: Path | None) -> None:
        """Record a round's releases and, with ``path``, persist the whole ledger atomically."""
        new = [{"round": round_index, "party": party, "event": event.describe()}
               for party, events in spend.items() for event in events]
        for entry in new:
            event_from_dict(entry["event"])  # validate everything before changing anything
        for entry in new:
            self._account(entry["party"], event_from_dict(entry["event"]))
        self.entries.extend(new)
        if path is not None:
            self.save(path)

    def parties(self) -> list[Party]:
        return sorted(self._accountants, key=lambda p: (isinstance(p, str), p))

    def accountant(self, party: Party) -> RDPAccountant:
        return self._accountants.get(party, RDPAccountant())

    def _account(self, party: Party, event: PrivacyEvent) -> None:
        self._accountants.setdefault(party, RDPAccountant()).compose(event)

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "delta": self.delta, "max_epsilon": self.max_epsilon, "entries": self.entries}

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f)
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
            if data.get("version") != 1:
                raise InvalidPrivacyParameter(f"unsupported ledger version {data.get('version')}")
            entries = [{"round": int(e["round"]), "party": _party(e["party"]), "event": dict(e["event"])}
                       for e in data["entries"]]
            return cls(float(data["delta"]), data.get("max_epsilon"), entries)
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
