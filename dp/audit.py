"""Audit of a privacy ledger: epsilon per client and for the population, under RDP and PRV, with each party's
unit (example or client) and neighbour relation, and zCDP / GDP parameters where the mechanism is natively so.

Clients with the same multiset of Gaussian terms (same noise, sampling rate and counts) share one RDP and
one PRV computation, and RDP curves are summed per distinct term, so a ledger of 1000 clients x 1000 rounds is
audited in seconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dp.accounting import PRVAccountant, RDPAccountant
from dp.accounting.rdp import ORDERS, _rdp_per_step, opacus_rdp
from dp.ledger import POPULATION, Party, PrivacyLedger, finite


def audit(ledger: PrivacyLedger, *, delta: float | None = None, prv: bool = True) -> dict[str, Any]:
    delta = ledger.delta if delta is None else delta
    rounds = _rounds_per_party(ledger)
    rdp_cache: dict[tuple, float | None] = {}
    prv_cache: dict[tuple[tuple, bool], float | None] = {}
    parties = {}
    for party in ledger.parties():
        accountant = ledger.accountant(party)
        terms = tuple(accountant.terms)
        key = (terms, accountant.bound_only)
        if terms not in rdp_cache:
            rdp_cache[terms] = finite(accountant.epsilon(delta))
        if prv and key not in prv_cache:
            prv_cache[key] = finite(accountant.as_kind(PRVAccountant).epsilon(delta))
        kind = ledger.kind(party)
        parties[str(party)] = {
            "unit": kind[0].value if kind else None,
            "relation": kind[1].value if kind else None,
            **native(terms, accountant.bound_only),
            "epsilon_rdp": rdp_cache[terms],
            "epsilon_prv": prv_cache.get(key) if prv else None,
            "prv_is_rdp_bound": accountant.bound_only,  # some release is bounded only in RDP (dp.events)
            "rounds": rounds.get(party, 0),
            "steps": sum(n for _, _, n in terms),
            "noise_multipliers": sorted({z for z, _, _ in terms}),
            "sampling_rates": sorted({q for _, q, _ in terms}),
        }
    population = parties.pop(POPULATION, None)
    if population is None and parties:  # example-level DP only: the worst client bounds the population
        worst = max(parties.values(), key=lambda p: p["epsilon_rdp"] or float("inf"))
        population = {**worst, "note": "largest client epsilon (no population-level events)"}
    return {"delta": delta, "population": population, "clients": parties}


def native(terms: tuple, bound_only: bool) -> dict[str, float | None]:
    """zCDP and Gaussian-DP parameters where the composition is natively so: unsampled Gaussians (q = 1) give
    rho = sum n / (2 z^2) (zCDP, Bun and Steinke 2016; also for the distributed discrete Gaussian, whose RDP
    bound is alpha rho) and, for exact Gaussians only, mu = sqrt(sum n / z^2) (mu-GDP, Dong, Roth, Su 2019).
    Subsampled terms are neither: None."""
    if not terms or any(q != 1.0 for _, q, _ in terms):
        return {"zcdp_rho": None, "gdp_mu": None}
    inverse = sum(n / (z * z) for z, _, n in terms)
    return {"zcdp_rho": inverse / 2.0, "gdp_mu": None if bound_only else float(np.sqrt(inverse))}


def _rounds_per_party(ledger: PrivacyLedger) -> dict[Party, int]:
    """How many distinct rounds each party spent budget in."""
    parties, round_of, party_of, _ = ledger.columns()
    if not parties:
        return {}
    low = int(round_of.min())
    span = int(round_of.max()) - low + 1
    pairs = np.unique(party_of * span + (round_of - low))  # one per distinct (party, round)
    return dict(zip(parties, np.bincount(pairs // span, minlength=len(parties)).tolist()))


def epsilon_per_round(ledger: PrivacyLedger, party: Party, delta: float | None = None) -> list[tuple[int, float]]:
    """Cumulative RDP epsilon of ``party`` after each round it spent budget in."""
    delta = ledger.delta if delta is None else delta
    parties, round_of, party_of, event_of = ledger.columns()
    if party not in parties:
        return []
    mine = party_of == parties.index(party)
    per_event = np.stack([sum((n * _rdp_per_step(z, q) for z, q, n in e.terms()), np.zeros(len(ORDERS)))
                          for e in ledger.events])
    rounds, first = np.unique(round_of[mine], return_inverse=True)
    by_round = np.zeros((len(rounds), len(ORDERS)))
    np.add.at(by_round, first, per_event[event_of[mine]])
    out = []
    for r, total in zip(rounds.tolist(), np.cumsum(by_round, axis=0)):
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
