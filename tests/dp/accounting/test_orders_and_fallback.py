"""The RDP order grid reaches small epsilons; PRV falls back to the RDP bound where it cannot answer."""

import math

import numpy as np
import pytest

from dp.accounting.prv import PRVAccountant
from dp.accounting.rdp import RDPAccountant
from dp.events import GaussianEvent


def dense_grid_epsilon(z: float, steps: int, delta: float) -> float:
    """Independent: the Gaussian's RDP steps * alpha / (2 z^2) converted (Balle et al. 2020) on a dense grid."""
    alpha = np.exp(np.linspace(np.log(1.01), np.log(1e6), 200000))
    rdp = steps * alpha / (2 * z * z)
    eps = rdp + np.log1p(-1 / alpha) - (np.log(delta) + np.log(alpha)) / (alpha - 1)
    return float(eps.min())


@pytest.mark.parametrize("z, steps", [(1000.0, 1), (300.0, 2), (5.0, 10), (1.0, 3)])
def test_small_epsilons_are_not_overstated(z, steps):
    accountant = RDPAccountant()
    for _ in range(steps):
        accountant.compose(GaussianEvent(z))
    reference = dense_grid_epsilon(z, steps, 1e-5)
    assert reference <= accountant.epsilon(1e-5) <= reference * 1.01  # the grid stopping at 512: 2.7x at z = 1000


def test_prv_answers_the_rdp_bound_where_opacus_answers_inf():
    prv = PRVAccountant()
    for _ in range(1000):
        prv.compose(GaussianEvent(0.5))
    eps = prv.epsilon(1e-5)
    assert math.isfinite(eps) and eps == pytest.approx(prv.as_kind(RDPAccountant).epsilon(1e-5))
