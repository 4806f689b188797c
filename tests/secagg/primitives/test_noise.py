import math

import numpy as np
import pytest
from scipy import stats

from secagg.errors import ConfigurationError
from secagg.primitives.noise import discrete_gaussian, secure_gaussian, secure_uniform


def test_uniforms_lie_in_the_half_open_unit_interval():
    u = secure_uniform(100_000)
    assert u.min() > 0 and u.max() <= 1
    assert abs(u.mean() - 0.5) < 0.01


def test_secure_gaussian_moments():
    x = secure_gaussian(100_001, 3.0)
    assert x.shape == (100_001,)
    assert abs(x.mean()) < 0.05 and x.std() == pytest.approx(3.0, rel=0.02)


@pytest.mark.parametrize("sigma", [0.5, 1.5, 7.0])
def test_discrete_gaussian_matches_its_probability_mass_function(sigma):
    n = 200_000
    x = discrete_gaussian(n, sigma)
    assert x.dtype == np.int64 and x.shape == (n,)
    support = np.arange(-math.ceil(6 * sigma), math.ceil(6 * sigma) + 1)
    pmf = np.exp(-support.astype(float) ** 2 / (2 * sigma**2))
    pmf /= pmf.sum()
    keep = pmf * n >= 20  # chi-square cells with enough expected counts; the rest pooled
    observed = np.array([np.sum(x == v) for v in support[keep]] + [np.sum(~np.isin(x, support[keep]))])
    expected = np.append(pmf[keep], pmf[~keep].sum() + 0.0) * n
    if expected[-1] < 1:  # nothing left to pool
        observed, expected = observed[:-1], expected[:-1] * observed[:-1].sum() / expected[:-1].sum()
    _, p_value = stats.chisquare(observed, expected)
    assert p_value > 1e-6  # a correct sampler fails this once in a million runs


def test_discrete_gaussian_at_a_large_sigma():
    x = discrete_gaussian(100_000, 2.0**18)
    assert abs(x.mean()) < 0.02 * 2**18 and x.std() == pytest.approx(2.0**18, rel=0.02)


@pytest.mark.parametrize("count, sigma", [(0, 1.0), (5, 0.0), (5, float("inf")), (5, 2.0**41)])
def test_bad_arguments(count, sigma):
    with pytest.raises(ConfigurationError):
        discrete_gaussian(count, sigma)


def test_a_sigma_too_narrow_to_sample_is_refused_not_looped_on():
    """Found by hypothesis: sigma = 1e-300 squared underflows to 0 and the sampler never accepted."""
    from secagg.encoding import FixedPointEncoder
    from secagg.primitives.noise import MIN_DISCRETE_SIGMA

    for sigma in (1e-300, 5e-324, MIN_DISCRETE_SIGMA / 2):
        with pytest.raises(ConfigurationError):
            discrete_gaussian(3, sigma)
        with pytest.raises(ConfigurationError):
            FixedPointEncoder(3, 2, noise_sigma=sigma)
    assert (discrete_gaussian(1000, MIN_DISCRETE_SIGMA) == 0).all()
