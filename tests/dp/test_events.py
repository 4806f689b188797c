import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp

from dp.errors import InvalidPrivacyParameter
from dp.events import (
    ComposedEvent,
    DistributedDiscreteGaussianEvent,
    DistributedGaussianEvent,
    GaussianEvent,
    Neighbouring,
    PoissonSampledGaussianEvent,
    Unit,
    event_from_dict,
)

z = st.floats(0.1, 20)


def leaves(kind: dict) -> st.SearchStrategy:
    return st.one_of(
        st.builds(GaussianEvent, z, **kind),
        st.builds(PoissonSampledGaussianEvent, z, st.floats(1e-4, 1.0), st.integers(1, 10**6), **kind),
        st.builds(DistributedGaussianEvent, z, st.integers(1, 1000), st.integers(1, 1000), **kind),
        st.builds(DistributedDiscreteGaussianEvent, z, st.integers(1, 100), st.integers(1, 100),
                  st.floats(0.5, 1e6), st.floats(1.0, 1e6), st.integers(1, 10**6), **kind))


kinds = st.fixed_dictionaries({"unit": st.sampled_from(Unit), "relation": st.sampled_from(Neighbouring)})
leaf = kinds.flatmap(lambda kind: leaves({k: st.just(v) for k, v in kind.items()}))
composed = kinds.flatmap(lambda kind: st.builds(
    ComposedEvent, st.lists(leaves({k: st.just(v) for k, v in kind.items()}), max_size=4).map(tuple)))
event = st.one_of(leaf, composed)


@given(event)
def test_describe_round_trips(e):
    assert event_from_dict(e.describe()) == e
    assert hash(e) == hash(event_from_dict(e.describe()))


def test_terms():
    assert GaussianEvent(2.0).terms() == [(2.0, 1.0, 1)]
    assert PoissonSampledGaussianEvent(1.0, 0.1, 7).terms() == [(1.0, 0.1, 7)]
    assert ComposedEvent((GaussianEvent(2.0), GaussianEvent(3.0))).terms() == [(2.0, 1.0, 1), (3.0, 1.0, 1)]


def test_distributed_noise_follows_the_survivors():
    # 8 survivors of shares sized for 2: twice the target noise; 1 survivor: less than the target
    assert DistributedGaussianEvent(1.0, 8, 2).effective_noise_multiplier == pytest.approx(2.0)
    assert DistributedGaussianEvent(1.0, 1, 2).effective_noise_multiplier == pytest.approx(2**-0.5)


def test_discrete_gaussian_at_large_sigma_is_the_gaussian_bound():
    # sigma = z D / sqrt(m) per client: tau vanishes and the effective z is z sqrt(survivors / m)
    e = DistributedDiscreteGaussianEvent(1.5, 8, 2, 1.5 * 1e5 / math.sqrt(2), 1e5, 4810)
    assert e.effective_noise_multiplier == pytest.approx(1.5 * 2.0, rel=1e-12)
    assert e.rdp_bound_only and not GaussianEvent(1.0).rdp_bound_only
    assert ComposedEvent((GaussianEvent(1.0), e)).rdp_bound_only


def _log_sum_of_discrete_gaussians(sigma, n, radius=80):
    """log P(Y_1 + ... + Y_n = x) for x in [-n radius, n radius], Y_i ~ N_Z(0, sigma^2), in log space."""
    support = np.arange(-radius, radius + 1)
    one = -support.astype(np.float64) ** 2 / (2 * sigma**2)
    one -= logsumexp(one)
    total = one
    for _ in range(n - 1):  # log-space convolution
        size = total.size + one.size - 1
        grid = np.full((one.size, size), -np.inf)
        for i, v in enumerate(one):
            grid[i, i:i + total.size] = v + total
        total = logsumexp(grid, axis=0)
    return total


@pytest.mark.parametrize("sigma, n", [(0.5, 2), (0.8, 3), (2.0, 2)])
def test_discrete_gaussian_bound_holds_against_the_exact_renyi_divergence(sigma, n):
    """An independent check of Proposition 14 in one dimension: the exact Renyi divergence between the sum
    of n discrete Gaussians and its shift by the sensitivity 1 never exceeds alpha * rho."""
    log_total = _log_sum_of_discrete_gaussians(sigma, n)
    log_p, log_q = log_total[1:], log_total[:-1]  # P(x) and P(x - 1) on a common support
    e = DistributedDiscreteGaussianEvent(1.0, n, n, sigma, 1.0, 1)
    for alpha in (1.5, 2.0, 4.0, 8.0):
        exact = logsumexp(alpha * log_p + (1 - alpha) * log_q) / (alpha - 1)
        assert 0 < exact <= alpha * e.rho * (1 + 1e-9)
    assert e.rho >= 1 / (2 * n * sigma**2)  # at least what a continuous sum of that variance gives


@pytest.mark.parametrize("make", [
    lambda: GaussianEvent(0.0), lambda: GaussianEvent(float("nan")),
    lambda: PoissonSampledGaussianEvent(1.0, 0.0), lambda: PoissonSampledGaussianEvent(1.0, 1.5),
    lambda: PoissonSampledGaussianEvent(1.0, 0.5, 0), lambda: DistributedGaussianEvent(1.0, 0, 2),
    lambda: DistributedDiscreteGaussianEvent(1.0, 2, 2, 0.4, 1.0, 1),
    lambda: DistributedDiscreteGaussianEvent(1.0, 2, 2, 1.0, 0.0, 1),
    lambda: DistributedDiscreteGaussianEvent(1.0, 2, 2, 1.0, 1.0, 0),
])
def test_invalid_events(make):
    with pytest.raises(InvalidPrivacyParameter):
        make()


@pytest.mark.parametrize("data", [{}, {"type": "Nope"}, {"type": "GaussianEvent"},
                                  {"type": "GaussianEvent", "noise_multiplier": -1},
                                  {"type": "GaussianEvent", "noise_multiplier": 1, "extra": 2}])
def test_bad_descriptions(data):
    with pytest.raises(InvalidPrivacyParameter):
        event_from_dict(data)


def test_units_and_relations_are_stated_and_never_mixed():
    assert PoissonSampledGaussianEvent(1.0, 0.1).describe()["unit"] == "example"
    assert PoissonSampledGaussianEvent(1.0, 0.1).describe()["relation"] == "add/remove"
    assert GaussianEvent(1.0).describe()["relation"] == "replace-with-zero"
    assert GaussianEvent(1.0).unit is Unit.CLIENT
    assert event_from_dict({"type": "GaussianEvent", "noise_multiplier": 1.0}) == GaussianEvent(1.0)  # ledger v3
    with pytest.raises(InvalidPrivacyParameter, match="different units"):
        ComposedEvent((GaussianEvent(1.0), PoissonSampledGaussianEvent(1.0, 0.1)))
    with pytest.raises(InvalidPrivacyParameter):
        event_from_dict({"type": "GaussianEvent", "noise_multiplier": 1.0, "unit": "household"})
