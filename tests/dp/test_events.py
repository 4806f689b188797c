import pytest
from hypothesis import given
from hypothesis import strategies as st

from dp.errors import InvalidPrivacyParameter
from dp.events import (
    ComposedEvent,
    DistributedGaussianEvent,
    GaussianEvent,
    PoissonSampledGaussianEvent,
    event_from_dict,
)

z = st.floats(0.1, 20)
gaussian = st.builds(GaussianEvent, z)
sampled = st.builds(PoissonSampledGaussianEvent, z, st.floats(1e-4, 1.0), st.integers(1, 10**6))
distributed = st.builds(DistributedGaussianEvent, z, st.integers(1, 1000), st.integers(1, 1000))
leaf = st.one_of(gaussian, sampled, distributed)
event = st.one_of(leaf, st.builds(ComposedEvent, st.lists(leaf, max_size=4).map(tuple)))


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


@pytest.mark.parametrize("make", [
    lambda: GaussianEvent(0.0), lambda: GaussianEvent(float("nan")),
    lambda: PoissonSampledGaussianEvent(1.0, 0.0), lambda: PoissonSampledGaussianEvent(1.0, 1.5),
    lambda: PoissonSampledGaussianEvent(1.0, 0.5, 0), lambda: DistributedGaussianEvent(1.0, 0, 2),
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
