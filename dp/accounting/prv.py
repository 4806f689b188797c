"""Privacy-loss-random-variable accounting (Gopi, Lee, Wutschitz 2021) through Opacus's PRV analysis."""

from __future__ import annotations

import math
import warnings

import numpy as np

from dp.accounting.base import Accountant
from dp.accounting import opacus_analysis
from dp.accounting.rdp import RDPAccountant


class PRVAccountant(Accountant):
    """PRV accounting needs each mechanism's exact privacy-loss distribution: when a term is only an RDP
    bound (``bound_only``), it reports the RDP epsilon, an upper bound, rather than claim a tighter one.

    ``relative_error``: the PRV discretization error allowed, as a fraction of the RDP epsilon (an upper
    bound of the PRV one), and at least 0.01 absolute. The domain, and so the time, grows as it shrinks: 0.5 %
    takes a quarter of the time of 0.2 %. The reported epsilon is Opacus's upper end of the error interval,
    so a coarser error only makes the figure more conservative. Where Opacus's PRV accountant answers inf or
    fails (its domain cannot hold the composition), the RDP epsilon is reported: never null, never smaller."""

    def __init__(self, relative_error: float = 0.005) -> None:
        super().__init__()
        self.relative_error = relative_error

    def _epsilon(self, delta: float) -> float:
        rdp = self.as_kind(RDPAccountant)
        if self.bound_only:
            return rdp.epsilon(delta)
        eps_error = max(0.01, self.relative_error * rdp.epsilon(delta))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eps = prv_epsilon(self.terms, delta, eps_error)
        except (ValueError, ArithmeticError, RuntimeError):  # outside the PRV domain Opacus can discretize
            eps = math.inf
        # PRV cannot place some compositions (inf or an error): the RDP bound is still a valid answer
        return eps if math.isfinite(eps) else rdp.epsilon(delta)


def prv_epsilon(terms: list[tuple[float, float, int]], delta: float, eps_error: float) -> float:
    """The upper end of the epsilon interval of the composition of ``terms`` (noise multiplier, sampling rate,
    count) at ``delta``: what ``opacus.accountants.PRVAccountant.get_epsilon`` computes, through its analysis
    alone (:mod:`dp.accounting.opacus_analysis`, no torch)."""
    analysis = opacus_analysis.prv()
    delta_error = delta / 1000
    prvs = [analysis.PoissonSubsampledGaussianPRV(q, z) for z, q, _ in terms]
    counts = [n for _, _, n in terms]
    size = analysis.compute_safe_domain_size(prvs=prvs, max_self_compositions=counts, eps_error=eps_error,
                                             delta_error=delta_error)
    mesh = eps_error / np.sqrt(sum(counts) * np.log(12 / delta_error) / 2)
    domain = analysis.Domain.create_aligned(-size, size, mesh)
    dprvs = [analysis.discretize(analysis.TruncatedPrivacyRandomVariable(p, domain.t_min, domain.t_max), domain)
             for p in prvs]
    composed = analysis.compose_heterogeneous(dprvs=dprvs, num_self_compositions=counts)
    return float(composed.compute_epsilon(delta, delta_error, eps_error)[2])
