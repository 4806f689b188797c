"""Audit of a privacy ledger: epsilon per client and for the population, under RDP and PRV.

Clients with the same multiset of Gaussian terms (same noise, sampling rate and counts) share one PRV
computation, and RDP curves are summed per distinct term, so a ledger of 1000 clients x 1000 rounds is
audited in seconds.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from dp.accounting import PRVAccountant, RDPAccountant
from dp.accounting.rdp import ORDERS, _rdp_per_step, opacus_rdp
from dp.ledger import POPULATION, Party, PrivacyLedger, finite


def audit(ledger: PrivacyLedger, *, delta: float | None = None, prv: bool = True) -> dict[str, Any]:
    delta = ledger.delta if delta is None else delta
    rounds: dict[Party, set[int]] = defaultdict(set)
    for r, party, _ in ledger.entries:
        rounds[party].add(r)
    prv_cache: dict[tuple[tuple, bool], float | None] = {}
    parties = {}
    for party in ledger.parties():
        accountant = ledger.accountant(party)
        terms = tuple(accountant.terms)
        key = (terms, accountant.bound_only)
        if prv and key not in prv_cache:
            p = PRVAccountant()
            p._terms, p.bound_only = accountant._terms.copy(), accountant.bound_only
            prv_cache[key] = finite(p.epsilon(delta))
        parties[str(party)] = {
            "epsilon_rdp": finite(accountant.epsilon(delta)),
            "epsilon_prv": prv_cache.get(key) if prv else None,
            "prv_is_rdp_bound": accountant.bound_only,  # some release is bounded only in RDP (dp.events)
            "rounds": len(rounds[party]),
            "steps": sum(n for _, _, n in terms),
            "noise_multipliers": sorted({z for z, _, _ in terms}),
            "sampling_rates": sorted({q for _, q, _ in terms}),
        }
    population = parties.pop(POPULATION, None)
    if population is None and parties:  # example-level DP only: the worst client bounds the population
        worst = max(parties.values(), key=lambda p: p["epsilon_rdp"] or float("inf"))
        population = {**worst, "note": "largest client epsilon (no population-level events)"}
    return {"delta": delta, "population": population, "clients": parties}


def epsilon_per_round(ledger: PrivacyLedger, party: Party, delta: float | None = None) -> list[tuple[int, float]]:
    """Cumulative RDP epsilon of ``party`` after each round it spent budget in."""
    delta = ledger.delta if delta is None else delta
    per_event = [sum((n * _rdp_per_step(z, q) for z, q, n in e.terms()), np.zeros(len(ORDERS)))
                 for e in ledger.events]
    by_round: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(len(ORDERS)))
    for r, p, index in ledger.entries:
        if p == party:
            by_round[r] += per_event[index]
    total, out = np.zeros(len(ORDERS)), []
    for r in sorted(by_round):
        total = total + by_round[r]
        eps, _ = opacus_rdp().get_privacy_spent(orders=list(ORDERS), rdp=total, delta=delta)
        out.append((r, float(eps)))
    return out


def ad_hoc(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> dict[str, Any]:
    """Epsilon of ``steps`` Poisson-sampled Gaussian steps under both accountants."""
    from dp.events import PoissonSampledGaussianEvent

    event = PoissonSampledGaussianEvent(noise_multiplier, sample_rate, steps)
    out = {}
    for name, cls in (("rdp", RDPAccountant), ("prv", PRVAccountant)):
        accountant = cls()
        accountant.compose(event)
        out[name] = finite(accountant.epsilon(delta))
    return {"epsilon": out, "delta": delta}

