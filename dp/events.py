"""Privacy events: immutable records of what a round released, consumed by accountants.

Producers (DP-SGD in a client, client-level noise in an aggregator) emit events; the round loop collects
them per round and per client. Concrete events subclass :class:`PrivacyEvent` as frozen dataclasses whose
docstrings state the mechanism.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PrivacyEvent:
    """Base of every privacy event."""

    def describe(self) -> dict[str, object]:
        """A JSON-ready description: the event's type and fields."""
        return {"type": type(self).__name__, **asdict(self)}
