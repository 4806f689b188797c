"""Renyi-DP accounting of Poisson-subsampled Gaussian terms (Mironov et al. 2019), on a fine order grid.

The per-order RDP of each term comes from Opacus's analysis; the conversion to (epsilon, delta) is Opacus's
``get_privacy_spent`` (the tighter conversion of Balle et al. 2020; tools that use the classic
``rdp + log(1/delta) / (alpha - 1)`` report larger epsilons, e.g. 3.01 instead of 2.60 for the DP-SGD MNIST
example).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dp.accounting.base import Accountant

ORDERS = tuple([1 + x / 20.0 for x in range(2, 200)] + list(range(11, 64)) + [80, 128, 256, 512])


@lru_cache(maxsize=4096)
def _rdp_per_step(noise_multiplier: float, sampling_rate: float) -> np.ndarray:
    return np.asarray(opacus_rdp().compute_rdp(q=sampling_rate, noise_multiplier=noise_multiplier, steps=1,
                                             orders=ORDERS))


class RDPAccountant(Accountant):
    def rdp(self) -> np.ndarray:
        total = np.zeros(len(ORDERS))
        for z, q, count in self.terms:
            total += count * _rdp_per_step(z, q)
        return total

    def _epsilon(self, delta: float) -> float:
        eps, _ = opacus_rdp().get_privacy_spent(orders=list(ORDERS), rdp=self.rdp(), delta=delta)
        return float(eps)


def opacus_rdp():  # Opacus takes over a second to import: only when an epsilon is computed
    from opacus.accountants.analysis import rdp

    return rdp
