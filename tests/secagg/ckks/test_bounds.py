"""The range check on a released CKKS aggregate: what k clipped contributions can give passes, nothing else."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.aggregation import RoundContext
from secagg.ckks import CKKSAggregator, CKKSParams
from secagg.ckks.bounds import check_release, tolerance
from secagg.ckks.request import Release
from secagg.errors import AggregateOutOfRange, AggregationAborted

PARAMS = CKKSParams(clip=0.5, max_weight=10.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100), st.integers(1, 50), st.integers(0, 2**32 - 1))
def test_every_honest_release_passes(k, dim, seed):
    rng = np.random.default_rng(seed)  # test data, not secrets
    alphas = rng.uniform(1e-3, 1.0, k)
    inputs = rng.choice([-1.0, 1.0], (k, dim)) * PARAMS.clip  # every coordinate at the clip: the worst case
    exact = alphas @ inputs
    noise = rng.uniform(-1, 1, dim + 1) * 8 * 2.0**-PARAMS.flood_bits
    check_release(Release(exact + noise[:-1], float(alphas.sum() + noise[-1])), k, PARAMS)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100), st.integers(1, 50), st.integers(0, 2**32 - 1), st.floats(1.001, 1e6))
def test_a_coordinate_beyond_weight_times_clip_is_refused(k, dim, seed, factor):
    rng = np.random.default_rng(seed)
    weight = float(rng.uniform(0.01, k))
    values = rng.uniform(-1, 1, dim) * weight * PARAMS.clip
    values[rng.integers(dim)] = (weight * PARAMS.clip + 2 * tolerance(PARAMS, k)) * factor * rng.choice([-1, 1])
    with pytest.raises(AggregateOutOfRange, match="exceeds"):
        check_release(Release(values, weight), k, PARAMS)


@pytest.mark.parametrize("weight", [0.0, -1.0, 3.01, np.nan, np.inf])
def test_a_weight_outside_zero_to_k_is_refused(weight):
    with pytest.raises(AggregateOutOfRange, match="weight"):
        check_release(Release(np.zeros(4), weight), 3, PARAMS)


def test_non_finite_values_are_refused():
    with pytest.raises(AggregateOutOfRange, match="NaN"):
        check_release(Release(np.array([0.0, np.nan]), 1.0), 2, PARAMS)


def test_the_aggregator_aborts_on_a_lying_key_holder():
    """A remote key holder's release is checked too: garbage aborts the round (typed), it is never averaged."""
    aggregator = CKKSAggregator(PARAMS)

    class Liar:
        def decrypt(self, request):
            return Release(np.full(request.length - 1, 1e3), 2.0)

    ctx = RoundContext.new(1, (0, 1, 2), 6)
    server = aggregator.server_session(ctx)
    server.key_holder = Liar()
    sessions = {c: aggregator.client_session(ctx, c, np.zeros(6), 1.0) for c in ctx.clients}
    for c, session in sessions.items():
        server.collect(c, session.start())
    for c, challenge in server.close_stage().items():
        server.collect(c, sessions[c].handle(challenge))
    assert server.close_stage() == {}
    with pytest.raises(AggregateOutOfRange) as info:
        server.result()
    assert isinstance(info.value, AggregationAborted)
