"""The accountant contract: compose events check-then-commit, report epsilon at a delta."""

from __future__ import annotations

import abc
import math
from collections import Counter

from dp.errors import InvalidPrivacyParameter
from dp.events import GaussianTerm, PrivacyEvent


class Accountant(abc.ABC):
    """Holds the multiset of Gaussian terms composed so far. Terms with equal (z, q) merge their counts, so a
    client that trained in 1000 rounds costs one term, not 1000. ``bound_only``: some term is only an RDP
    bound of its mechanism (see :mod:`dp.events`)."""

    def __init__(self) -> None:
        self._terms: Counter[tuple[float, float]] = Counter()
        self.bound_only = False

    @classmethod
    def of(cls, terms: Counter[tuple[float, float]], bound_only: bool = False) -> Accountant:
        """An accountant holding ``terms`` (copied): another accountant's, or a ledger's for one party."""
        accountant = cls()
        accountant._terms, accountant.bound_only = terms.copy(), bound_only
        return accountant

    def as_kind(self, kind: type[Accountant]) -> Accountant:
        """The same composition under another accountant."""
        return kind.of(self._terms, self.bound_only)

    def compose(self, event: PrivacyEvent) -> None:
        """Add ``event``; if it is invalid nothing is added."""
        terms = event.terms()
        for z, q, count in terms:
            if not (z > 0 and 0 < q <= 1 and count >= 1):
                raise InvalidPrivacyParameter(f"invalid Gaussian term {(z, q, count)}")
        for z, q, count in terms:
            self._terms[(z, q)] += count
        self.bound_only |= event.rdp_bound_only

    def epsilon_if(self, event: PrivacyEvent, delta: float) -> float:
        """Epsilon after composing ``event``, leaving this accountant unchanged."""
        trial = self.as_kind(type(self))
        trial.compose(event)
        return trial.epsilon(delta)

    @property
    def terms(self) -> list[GaussianTerm]:
        return [(z, q, n) for (z, q), n in sorted(self._terms.items())]

    def epsilon(self, delta: float) -> float:
        if not 0 < delta < 1:
            raise InvalidPrivacyParameter(f"delta must be in (0, 1), got {delta}")
        if not self._terms:
            return 0.0
        eps = self._epsilon(delta)
        return eps if math.isfinite(eps) else math.inf

    @abc.abstractmethod
    def _epsilon(self, delta: float) -> float: ...
