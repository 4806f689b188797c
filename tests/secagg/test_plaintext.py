import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    AggregationAborted,
    Aggregator,
    MessageError,
    PlaintextAggregator,
    ProtocolError,
    RoundContext,
    UpdateRejected,
)
from secagg.errors import ConfigurationError
from secagg.plaintext import encode_update


def ctx(clients=(0, 1, 2), dim=4, min_clients=1, round=1):
    return RoundContext.new(round, clients, dim, min_clients)


def test_is_an_aggregator():
    assert isinstance(PlaintextAggregator(), Aggregator)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.integers(1, 50), st.sampled_from([None, 1.0, 10.0]), st.data())
def test_result_is_weighted_mean(n, dim, clip, data):
    """Of the updates clipped to [-clip, clip] coordinate-wise, as masking and CKKS do (clip=None: exact)."""
    c = ctx(tuple(range(n)), dim)
    agg = PlaintextAggregator(clip=clip)
    updates = [np.array(data.draw(st.lists(st.floats(-10, 10, width=32), min_size=dim, max_size=dim)),
                        dtype=np.float32) for _ in range(n)]
    weights = [data.draw(st.floats(0.5, 100)) for _ in range(n)]
    server = agg.server_session(c)
    for i in range(n):
        server.collect(i, agg.client_session(c, i, updates[i], weights[i]).start())
    assert server.close_stage() == {} and server.finished
    result = server.result()
    stacked = np.stack(updates).astype(np.float64)
    expected = np.average(stacked if clip is None else np.clip(stacked, -clip, clip), axis=0, weights=weights)
    np.testing.assert_allclose(result.mean, expected, rtol=1e-5, atol=1e-5)
    assert result.total_weight == pytest.approx(sum(weights))
    assert result.contributors == tuple(range(n))
    assert result.details["clipped"] == (0 if clip is None else np.count_nonzero(np.abs(stacked) > clip))


def test_nan_update_rejected():
    c = ctx()
    server = PlaintextAggregator().server_session(c)
    bad = np.array([0, np.nan, 0, 0], dtype=np.float32)
    with pytest.raises(UpdateRejected, match="NaN"):
        server.collect(0, encode_update(c, 0, bad, 1.0))


@pytest.mark.parametrize("weight", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_weight_rejected(weight):
    c = ctx()
    server = PlaintextAggregator().server_session(c)
    with pytest.raises(UpdateRejected, match="weight"):
        server.collect(0, encode_update(c, 0, np.zeros(4, np.float32), weight))


def test_a_huge_update_counts_clipped_like_in_the_secure_modes():
    """A liar's 1e30 (finite in float32) moves each coordinate of the mean by at most clip / n."""
    c = ctx()
    server = PlaintextAggregator().server_session(c)
    server.collect(0, encode_update(c, 0, np.full(4, 1e30, np.float32), 1.0))
    server.collect(1, encode_update(c, 1, np.full(4, 0.25, np.float32), 1.0))
    server.collect(2, encode_update(c, 2, np.full(4, -0.25, np.float32), 1.0))
    server.close_stage()
    result = server.result()
    np.testing.assert_allclose(result.mean, np.full(4, 1.0 / 3), rtol=1e-6)
    assert result.details["clipped"] == 4 and result.contributors == (0, 1, 2)


def test_unclipped_mode_refuses_a_contribution_that_would_overflow_the_sum():
    c = ctx()
    server = PlaintextAggregator(clip=None).server_session(c)
    big = np.full(4, 1.5, np.float32)
    server.collect(0, encode_update(c, 0, big, 1e308))
    with pytest.raises(UpdateRejected, match="overflow"):
        server.collect(1, encode_update(c, 1, big, 1e308))
    server.collect(2, encode_update(c, 2, np.zeros(4, np.float32), 1.0))
    server.close_stage()
    result = server.result()
    assert result.contributors == (0, 2) and np.isfinite(result.mean).all()


def test_unclipped_mode_accepts_large_values_whose_sum_is_finite():
    """Only a sum that would really overflow is refused: opposite signs and disjoint coordinates are kept."""
    c = ctx()
    server = PlaintextAggregator(clip=None).server_session(c)
    server.collect(0, encode_update(c, 0, np.array([15, 0, 15, 0], np.float32), 1e307))
    server.collect(1, encode_update(c, 1, np.array([-15, 15, 0, 0], np.float32), 1e307))
    server.close_stage()
    assert server.result().contributors == (0, 1)


def test_clipped_counts_exactly_the_coordinates_the_clip_changed():
    """Counted on the float64 values that are clipped (float32 0.1 lies above float64 0.1: it is clipped)."""
    c = ctx()
    server = PlaintextAggregator(clip=0.1).server_session(c)
    server.collect(0, encode_update(c, 0, np.array([0.1, -0.05, 0.05, -0.3], np.float32), 1.0))
    server.close_stage()
    assert server.result().details["clipped"] == 2


def test_weight_above_the_public_bound_is_refused():
    c = ctx()
    agg = PlaintextAggregator(max_weight=10.0)
    with pytest.raises(UpdateRejected, match="max_weight"):
        agg.client_session(c, 0, np.zeros(4, np.float32), 11.0)
    with pytest.raises(UpdateRejected, match="max_weight"):
        agg.server_session(c).collect(0, encode_update(c, 0, np.zeros(4, np.float32), 1e9))


@pytest.mark.parametrize("kwargs", [dict(clip=0.0), dict(clip=float("inf")), dict(clip=float("nan")),
                                    dict(max_weight=-1.0), dict(max_weight=float("inf"))])
def test_bad_bounds_are_refused(kwargs):
    with pytest.raises(ConfigurationError):
        PlaintextAggregator(**kwargs)


def test_wrong_shape_rejected_on_both_sides():
    c = ctx()
    with pytest.raises(UpdateRejected, match="shape"):
        PlaintextAggregator().client_session(c, 0, np.zeros(5, np.float32), 1.0)
    server = PlaintextAggregator().server_session(c)
    with pytest.raises(MessageError):
        server.collect(0, encode_update(c, 0, np.zeros(5, np.float32), 1.0))


def test_protocol_refusals():
    c = ctx()
    server = PlaintextAggregator().server_session(c)
    msg = encode_update(c, 0, np.zeros(4, np.float32), 1.0)
    with pytest.raises(ProtocolError, match="not a participant"):
        server.collect(9, encode_update(c, 9, np.zeros(4, np.float32), 1.0))
    with pytest.raises(ProtocolError, match="claims sender"):
        server.collect(1, msg)
    server.collect(0, msg)
    with pytest.raises(ProtocolError, match="duplicate"):
        server.collect(0, msg)
    other = ctx(round=2)
    with pytest.raises(ProtocolError, match="another session"):
        server.collect(2, encode_update(other, 2, np.zeros(4, np.float32), 1.0))
    with pytest.raises(ProtocolError, match="before the round closed"):
        server.result()


def test_aborts_below_min_clients():
    c = ctx(min_clients=2)
    server = PlaintextAggregator().server_session(c)
    server.collect(0, encode_update(c, 0, np.zeros(4, np.float32), 1.0))
    server.close_stage()
    with pytest.raises(AggregationAborted, match="min_clients=2"):
        server.result()


def test_client_has_one_stage():
    c = ctx()
    client = PlaintextAggregator().client_session(c, 0, np.zeros(4, np.float32), 1.0)
    with pytest.raises(ProtocolError):
        client.handle(b"")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(session=b"short"), "session"),
        (dict(clients=(1, 1)), "distinct"),
        (dict(dimension=0), "dimension"),
        (dict(min_clients=0), "min_clients"),
        (dict(clients=(2**32 - 1,)), "u32"),
    ],
)
def test_round_context_validation(kwargs, match):
    base = dict(session=bytes(16), round=0, clients=(0, 1), dimension=3, min_clients=1)
    with pytest.raises(ConfigurationError, match=match):
        RoundContext(**{**base, **kwargs})
