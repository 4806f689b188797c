"""One contract every accountant passes, plus values pinned to published figures and to an independent
numerical integration of the sampled Gaussian's Renyi divergence."""

import math

import pytest
from scipy import integrate, stats

from dp.accounting import PRVAccountant, RDPAccountant
from dp.accounting.rdp import ORDERS, _rdp_per_step
from dp.errors import InvalidPrivacyParameter
from dp.events import ComposedEvent, DistributedDiscreteGaussianEvent, GaussianEvent, PoissonSampledGaussianEvent

MNIST = PoissonSampledGaussianEvent(1.1, 256 / 60000, 14062)  # 60 epochs of batch 256 over 60,000 examples
PRV_PAPER = PoissonSampledGaussianEvent(1.5, 0.04, 2250)


class AccountantContract:
    make: type

    def test_nothing_spent_is_zero(self):
        assert self.make().epsilon(1e-5) == 0.0

    def test_more_steps_cost_more(self):
        a, b = self.make(), self.make()
        a.compose(PoissonSampledGaussianEvent(1.0, 0.01, 100))
        b.compose(PoissonSampledGaussianEvent(1.0, 0.01, 1000))
        assert 0 < a.epsilon(1e-5) < b.epsilon(1e-5)

    def test_more_noise_costs_less(self):
        a, b = self.make(), self.make()
        a.compose(GaussianEvent(1.0))
        b.compose(GaussianEvent(4.0))
        assert a.epsilon(1e-5) > b.epsilon(1e-5)

    def test_composition_adds_up(self):
        one, split = self.make(), self.make()
        one.compose(PoissonSampledGaussianEvent(1.0, 0.02, 200))
        split.compose(ComposedEvent((PoissonSampledGaussianEvent(1.0, 0.02, 120),
                                     PoissonSampledGaussianEvent(1.0, 0.02, 80))))
        assert one.epsilon(1e-5) == pytest.approx(split.epsilon(1e-5), rel=1e-3)

    def test_epsilon_if_leaves_the_accountant_unchanged(self):
        a = self.make()
        a.compose(GaussianEvent(2.0))
        before = a.epsilon(1e-5)
        assert a.epsilon_if(GaussianEvent(2.0), 1e-5) > before
        assert a.epsilon(1e-5) == before

    def test_delta_is_validated(self):
        with pytest.raises(InvalidPrivacyParameter):
            self.make().epsilon(0.0)


class TestRDP(AccountantContract):
    make = RDPAccountant

    def test_dp_sgd_mnist_is_2_60(self):
        a = RDPAccountant()
        a.compose(MNIST)
        assert a.epsilon(1e-5) == pytest.approx(2.60, abs=0.005)

    def test_published_value_7_3291_within_1_percent(self):
        a = RDPAccountant()
        a.compose(PRV_PAPER)
        assert a.epsilon(1e-5) == pytest.approx(7.3291, rel=0.01)

    @pytest.mark.parametrize("z, q, alpha", [(1.1, 0.01, 2), (1.5, 0.04, 8), (0.8, 0.1, 4), (2.0, 1.0, 16)])
    def test_rdp_matches_an_independent_numerical_integration(self, z, q, alpha):
        """RDP(alpha) = log E_{x ~ N(0, z^2)} [((1 - q) + q exp((2x - 1) / (2 z^2)))^alpha] / (alpha - 1)."""
        def integrand(x):
            ratio = (1 - q) + q * math.exp((2 * x - 1) / (2 * z * z))
            return stats.norm.pdf(x, scale=z) * ratio**alpha

        value, _ = integrate.quad(integrand, -40 * z, 40 * z, limit=500)
        expected = math.log(value) / (alpha - 1)
        got = _rdp_per_step(z, q)[ORDERS.index(alpha)]
        assert got == pytest.approx(expected, rel=0.01)


class TestPRV(AccountantContract):
    make = PRVAccountant

    def test_published_value_6_78_within_2_percent(self):
        a = PRVAccountant()
        a.compose(PRV_PAPER)
        assert a.epsilon(1e-5) == pytest.approx(6.78, rel=0.02)

    def test_prv_is_tighter_than_rdp(self):
        a, b = PRVAccountant(), RDPAccountant()
        a.compose(MNIST)
        b.compose(MNIST)
        assert a.epsilon(1e-5) < b.epsilon(1e-5)


def test_invalid_events_leave_no_partial_state():
    a = RDPAccountant()
    a.compose(GaussianEvent(1.0))

    class Broken(GaussianEvent):
        def terms(self):
            return [(1.0, 1.0, 1), (-1.0, 1.0, 1)]

    with pytest.raises(InvalidPrivacyParameter):
        a.compose(Broken(1.0))
    assert a.terms == [(1.0, 1.0, 1)]


def test_prv_falls_back_to_rdp_once_a_term_is_only_an_rdp_bound():
    bound = DistributedDiscreteGaussianEvent(1.0, 4, 4, 5e3, 1e4, 100)  # effective z = 1
    prv, rdp = PRVAccountant(), RDPAccountant()
    for a in (prv, rdp):
        a.compose(PoissonSampledGaussianEvent(1.0, 0.1, 100))
    assert prv.epsilon(1e-5) < rdp.epsilon(1e-5)
    assert prv.epsilon_if(bound, 1e-5) == pytest.approx(rdp.epsilon_if(bound, 1e-5))
    assert not prv.bound_only  # epsilon_if left it unchanged
    prv.compose(bound)
    rdp.compose(bound)
    assert prv.bound_only and prv.epsilon(1e-5) == pytest.approx(rdp.epsilon(1e-5))
