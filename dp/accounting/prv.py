"""Privacy-loss-random-variable accounting (Gopi, Lee, Wutschitz 2021) through Opacus's PRV analysis."""

from __future__ import annotations

import warnings

from opacus.accountants import PRVAccountant as OpacusPRV

from dp.accounting.base import Accountant


class PRVAccountant(Accountant):
    def __init__(self, eps_error: float = 0.01) -> None:
        super().__init__()
        self.eps_error = eps_error

    def _epsilon(self, delta: float) -> float:
        accountant = OpacusPRV()
        accountant.history = [(z, q, n) for z, q, n in self.terms]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(accountant.get_epsilon(delta=delta, eps_error=self.eps_error))
