"""Poisson client sampling: rounds of varying size from a CSPRNG, every eligible client charged the sampled
Gaussian (add/remove neighbours), and accounting that agrees with an independent RDP computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import gammaln, logsumexp

from dp.accounting.rdp import RDPAccountant
from dp.events import GaussianEvent, Neighbouring, PoissonSampledGaussianEvent, Unit
from dp.ledger import POPULATION
from federation import CentralDP, ClientSampling, ConfigError, DistributedDP, Masking
from tests.federation.test_api import cnn, federation


def sampled_gaussian_rdp(q: float, z: float, alpha: int) -> float:
    """Independent: RDP of the Poisson-subsampled Gaussian at an integer order (Mironov, Talwar, Zhang 2019,
    add/remove): log(sum_k C(alpha, k) (1 - q)^(alpha - k) q^k exp((k^2 - k) / (2 z^2))) / (alpha - 1)."""
    k = np.arange(alpha + 1)
    log_binom = gammaln(alpha + 1) - gammaln(k + 1) - gammaln(alpha - k + 1)
    with np.errstate(divide="ignore"):
        terms = log_binom + (alpha - k) * np.log1p(-q) + k * np.log(q) + (k * k - k) / (2 * z * z)
    return float(logsumexp(terms)) / (alpha - 1)


def balle_epsilon(rdp: np.ndarray, orders: np.ndarray, delta: float) -> float:
    eps = rdp + np.log1p(-1 / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)
    return float(eps.min())


@pytest.mark.parametrize("z, q, rounds", [(1.0, 0.1, 100), (0.8, 0.1, 100), (2.0, 0.01, 1000), (1.0, 0.5, 20)])
def test_client_level_poisson_accounting_agrees_with_an_independent_accountant(z, q, rounds):
    orders = np.arange(2, 257)
    independent = np.array([rounds * sampled_gaussian_rdp(q, z, int(a)) for a in orders])
    from dp.accounting.rdp import ORDERS

    ours = RDPAccountant()
    for _ in range(rounds):
        ours.compose(PoissonSampledGaussianEvent(z, q, unit=Unit.CLIENT, relation=Neighbouring.ADD_REMOVE))
    our_rdp = dict(zip(ORDERS, ours.rdp()))
    for a, rdp in zip(orders, independent):
        if a in our_rdp:
            assert our_rdp[a] == pytest.approx(rdp, rel=0.01)
    reference = balle_epsilon(independent, orders.astype(float), 1e-5)
    assert ours.epsilon(1e-5) == pytest.approx(reference, rel=0.01) or ours.epsilon(1e-5) < reference


def test_the_issue_example_poisson_is_much_cheaper_than_fixed_size_without_amplification():
    """N = 100 clients, 10 per round, 100 rounds, z = 1: fixed-size sampling is charged q = 1 every round."""
    fixed, poisson = RDPAccountant(), RDPAccountant()
    for _ in range(100):
        fixed.compose(GaussianEvent(1.0))
        poisson.compose(PoissonSampledGaussianEvent(1.0, 0.1, unit=Unit.CLIENT, relation=Neighbouring.ADD_REMOVE))
    assert fixed.epsilon(1e-5) > 10 * poisson.epsilon(1e-5)


def test_a_poisson_federation_releases_and_charges_every_round_drawn_or_not(tmp_path):
    fed = federation(cnn(), clients=8, rounds=8, local_epochs=1, clients_per_round=1,
                     client_sampling=ClientSampling.POISSON, dp=CentralDP(noise_multiplier=1.0))
    history = fed.run()
    assert all(r.status.value == "ok" and r.charged == 8 for r in history)  # empty draws release the noise alone
    ledger = history.ledger
    for client in range(8):  # drawn or not, each client is charged every round
        assert ledger.terms(client) == [(1.0, 1 / 8, 8)]
    assert ledger.terms(POPULATION) == [(1.0, 1 / 8, 8)]
    assert history.privacy_summary()["relation"] == "add/remove"
    assert history.privacy_summary()["unit"] == "client"


@pytest.mark.parametrize("kwargs", [
    dict(secure=Masking(), dp=DistributedDP(noise_multiplier=1.0)),
    dict(secure=Masking(), dp=CentralDP(noise_multiplier=1.0)),  # a round of too few would abort: that leaks
    dict(dp=CentralDP(noise_multiplier=1.0), min_clients=2),
    dict(dp=CentralDP(noise_multiplier=1.0, adaptive_quantile=0.5)),
])
def test_poisson_where_a_round_could_abort_or_its_noise_change_is_refused(kwargs):
    with pytest.raises(ConfigError, match="Poisson"):
        federation(clients=4, clients_per_round=2, client_sampling=ClientSampling.POISSON, **kwargs).prepare()


def test_an_empty_poisson_round_releases_only_noise_of_the_accounted_size():
    from federation import protection

    population = protection.Population((5,) * 10, (1,) * 10, 2, sampling_rate=0.2)
    stack = protection.build(None, CentralDP(noise_multiplier=2.0, clip=0.5), population)
    result = stack.aggregator.noise_only(20000)
    assert result.contributors == () and result.events == stack.planned_population
    assert (result.mean * 2.0).std() == pytest.approx(2.0 * 0.5, rel=0.05)  # sum noise z C over q N = 2


def test_target_epsilon_under_poisson_uses_the_sampling_rate():
    fixed = federation(clients=10, clients_per_round=2, dp=CentralDP(target_epsilon=3.0), rounds=20)
    poisson = federation(clients=10, clients_per_round=2, dp=CentralDP(target_epsilon=3.0), rounds=20,
                         client_sampling=ClientSampling.POISSON)
    fixed.prepare()
    poisson.prepare()
    assert poisson.noise_multiplier < fixed.noise_multiplier


def test_secure_mode_releases_exact_grid_multiples_with_the_accounted_noise():
    from dp.clipping import SNAP_BITS, noised_sum

    total = np.linspace(-3, 3, 50000)
    released = noised_sum(total, 2.0, 0.5, secure_mode=True)
    grid = 2.0 ** math.floor(math.log2(1.0) - SNAP_BITS)
    assert np.all(released / grid == np.round(released / grid))
    assert (released - total).std() == pytest.approx(1.0, rel=0.02)
