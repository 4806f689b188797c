"""Empirical lower bounds on epsilon from one training run (Steinke, Nasr, Jagielski, NeurIPS 2023).

m canaries are each included in the training data independently with probability 1/2 (bits from
``secrets``, never a seeded generator: an auditor who could predict them would prove nothing). After the
run the auditor scores every canary, guesses "in" for the k+ highest scores and "out" for the k- lowest, and
abstains on the rest. Of the r = k+ + k- guesses, v are correct.

The paper's theorem: if the training is (eps, delta)-DP for each canary, then

    P[v correct] <= P[Binomial(r, q) >= v] + 2 m delta max_{1<=i<=v} P[v - i <= Binomial(r, q) < v] / i,
    q = e^eps / (1 + e^eps),

(for delta = 0 the count of correct guesses is stochastically dominated by Binomial(r, q): each guess is no
better than eps-DP randomized response). So when that p-value is below ``confidence``, the run is *not*
(eps, delta)-DP at confidence 1 - ``confidence``; the lower bound is the largest such eps (bisection; the
p-value grows with eps). The delta term is the paper's; it is handled, not dropped, so the bound is valid
for the (eps, delta) the accountant states. Choosing (k+, k-) after looking at the scores is a multiple
test: :func:`best_audit` divides ``confidence`` by the number of choices tried (Bonferroni).
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import special, stats

from dp.errors import InvalidPrivacyParameter

_EPS_CEILING = 1e3  # no finite count of guesses gets near this
_BISECTIONS = 60


def inclusion_bits(m: int) -> np.ndarray:
    """``m`` independent fair bits (True: the canary is included) from the operating system's CSPRNG."""
    if m < 1:
        raise InvalidPrivacyParameter(f"need at least one canary, got {m}")
    raw = np.frombuffer(secrets.token_bytes((m + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw)[:m].astype(bool)


def p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Probability of at least ``v`` correct of ``r`` guesses on ``m`` canaries under (epsilon, delta)-DP."""
    _check_counts(m, r, v)
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise InvalidPrivacyParameter(f"epsilon must be finite and non-negative, got {epsilon}")
    if not 0 <= delta <= 1:
        raise InvalidPrivacyParameter(f"delta must be in [0, 1], got {delta}")
    q = float(special.expit(epsilon))  # the accuracy of eps-DP randomized response
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    alpha = 0.0
    if v > 0 and delta > 0:
        i = np.arange(1, v + 1)
        below = np.cumsum(stats.binom.pmf(v - i, r, q))  # P[v - i <= Binomial(r, q) < v]
        alpha = float(np.max(below / i))
    return min(1.0, beta + 2 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, *, delta: float = 0.0, confidence: float = 0.05) -> float:
    """The largest epsilon that ``v`` correct of ``r`` guesses on ``m`` canaries rules out at level
    ``confidence`` (0.0 when they rule out none)."""
    _check_counts(m, r, v)
    if not 0 < confidence < 1:
        raise InvalidPrivacyParameter(f"confidence must be in (0, 1), got {confidence}")
    if p_value(m, r, v, 0.0, delta) >= confidence:
        return 0.0
    low, high = 0.0, 1.0  # invariant: p_value(low) < confidence <= p_value(high)
    while p_value(m, r, v, high, delta) < confidence:
        low, high = high, 2 * high
        if high > _EPS_CEILING:
            return low
    for _ in range(_BISECTIONS):
        mid = (low + high) / 2
        if p_value(m, r, v, mid, delta) < confidence:
            low = mid
        else:
            high = mid
    return low


def guess(scores: Sequence[float] | np.ndarray, k_plus: int, k_minus: int) -> np.ndarray:
    """+1 ("in") for the ``k_plus`` highest scores, -1 ("out") for the ``k_minus`` lowest, 0 elsewhere
    (ties broken by position, independently of the inclusion bits)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.all(np.isfinite(s)):
        raise InvalidPrivacyParameter("scores must be a finite one-dimensional array")
    if k_plus < 0 or k_minus < 0 or k_plus + k_minus > len(s):
        raise InvalidPrivacyParameter(f"cannot make {k_plus} + {k_minus} guesses on {len(s)} canaries")
    order = np.argsort(-s, kind="stable")
    out = np.zeros(len(s), dtype=np.int8)
    out[order[:k_plus]] = 1
    if k_minus:
        out[order[len(s) - k_minus:]] = -1
    return out


@dataclass(frozen=True)
class OneRunAudit:
    """The outcome of one audit: ``m`` canaries, ``guesses`` made (k+ "in", k- "out"), ``correct`` of them,
    and the epsilon they rule out at (``delta``, level ``confidence`` after Bonferroni over ``tried``)."""

    m: int
    included: int
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    epsilon_lower: float
    delta: float
    confidence: float
    tried: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit(scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray, *, k_plus: int,
          k_minus: int, delta: float = 0.0, confidence: float = 0.05, tried: int = 1) -> OneRunAudit:
    """Guess from ``scores`` (higher: more likely included) and bound epsilon at level ``confidence / tried``."""
    bits = np.asarray(included, dtype=bool)
    t = guess(scores, k_plus, k_minus)
    if bits.shape != t.shape:
        raise InvalidPrivacyParameter(f"{len(t)} scores for {bits.size} inclusion bits")
    if tried < 1:
        raise InvalidPrivacyParameter(f"tried must be at least 1, got {tried}")
    truth = np.where(bits, 1, -1)
    r = int(np.count_nonzero(t))
    v = int(np.count_nonzero(t * truth > 0))
    eps = epsilon_lower_bound(len(t), r, v, delta=delta, confidence=confidence / tried)
    return OneRunAudit(len(t), int(bits.sum()), k_plus, k_minus, r, v, eps, delta, confidence, tried)


def default_choices(m: int) -> list[tuple[int, int]]:
    """(k+, k-) pairs worth trying on ``m`` canaries: "in"-only guesses and symmetric ones at several sizes."""
    sizes = sorted({max(1, m * f // 100) for f in (5, 10, 25, 50)})
    return [(k, 0) for k in sizes] + [(k, k) for k in sizes if 2 * k <= m]


def best_audit(scores: Sequence[float] | np.ndarray, included: Sequence[bool] | np.ndarray, *,
               choices: Sequence[tuple[int, int]] | None = None, delta: float = 0.0,
               confidence: float = 0.05) -> OneRunAudit:
    """The largest bound over ``choices`` of (k+, k-) (default :func:`default_choices`), each tested at
    ``confidence / len(choices)`` so that the maximum stays valid at level ``confidence``."""
    pairs = list(choices) if choices is not None else default_choices(len(np.asarray(scores)))
    if not pairs:
        raise InvalidPrivacyParameter("no (k+, k-) choices to try")
    results = [audit(scores, included, k_plus=kp, k_minus=km, delta=delta, confidence=confidence,
                     tried=len(pairs)) for kp, km in pairs]
    return max(results, key=lambda a: (a.epsilon_lower, a.correct))


def _check_counts(m: int, r: int, v: int) -> None:
    if not 0 <= v <= r <= m:
        raise InvalidPrivacyParameter(f"need 0 <= correct <= guesses <= canaries, got {v}, {r}, {m}")
