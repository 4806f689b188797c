import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.encoding import FixedPointEncoder
from secagg.errors import ConfigurationError, UpdateRejected


def wrap_sum(encodings, dtype):
    total = np.zeros_like(encodings[0])
    for e in encodings:
        np.add(total, e, out=total)
    return total.astype(dtype)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 40), st.integers(8, 24), st.data())
def test_decoded_weighted_mean_is_within_the_quantization_bound(n, dim, bits, data):
    enc = FixedPointEncoder(dim, n, clip=1.0, precision_bits=bits, max_weight=10.0)
    xs = [np.array(data.draw(st.lists(st.floats(-1, 1), min_size=dim, max_size=dim)), dtype=np.float32)
          for _ in range(n)]
    ws = [data.draw(st.floats(0.5, 10.0)) for _ in range(n)]
    mean, weight = enc.decode(wrap_sum([enc.encode(x, w) for x, w in zip(xs, ws)], enc.dtype), n)
    expected = np.average(np.stack(xs).astype(np.float64), axis=0, weights=ws)
    alpha_sum = sum(ws) / 10.0
    # each client's coordinate and weight element are off by less than one step before division
    bound = n * enc.step / alpha_sum * (1 + 2 * np.abs(expected).max()) + 1e-6
    assert np.abs(mean - expected).max() <= bound
    assert weight == pytest.approx(sum(ws), abs=n * 10.0 / enc.levels + 1e-9)


def test_stochastic_rounding_is_unbiased():
    enc = FixedPointEncoder(20000, 1, clip=1.0, precision_bits=4)
    x = np.full(20000, 0.3, dtype=np.float32)  # not a multiple of the step
    q = enc.encode(x, 1.0)[:-1].astype(np.float64)
    decoded = (q.mean() - enc.offset) / enc.scale
    assert abs(decoded - 0.3) < 0.01 * enc.step * 10
    assert len(np.unique(q)) == 2  # both neighbouring levels occur


def test_values_are_clipped():
    enc = FixedPointEncoder(2, 1, clip=0.5)
    mean, _ = enc.decode(enc.encode(np.array([3.0, -3.0], np.float32), 1.0), 1)
    np.testing.assert_allclose(mean, [0.5, -0.5], atol=2 * enc.step)


def test_ring_word_follows_clients_and_precision():
    assert FixedPointEncoder(10, 1000, precision_bits=20).dtype == np.uint32  # 30 bits
    assert FixedPointEncoder(10, 5000, precision_bits=20).dtype == np.uint64  # 33 bits
    with pytest.raises(ConfigurationError, match="wrap"):
        FixedPointEncoder(10, 2**20, precision_bits=52)


def test_a_sum_at_the_largest_values_does_not_wrap():
    n = 1 << 12
    enc = FixedPointEncoder(1, n, clip=1.0, precision_bits=20)  # exactly 32 bits
    one = enc.encode(np.array([1.0], np.float32), 1.0)
    total = (one.astype(np.uint64) * n).astype(enc.dtype)
    mean, weight = enc.decode(total, n)
    assert mean[0] == pytest.approx(1.0, abs=1e-5) and weight == pytest.approx(n)


@pytest.mark.parametrize("update, weight, match", [
    (np.array([np.nan, 0.0]), 1.0, "NaN"),
    (np.array([np.inf, 0.0]), 1.0, "NaN"),
    (np.zeros(3), 1.0, "shape"),
    (np.zeros(2), 0.0, "weight"),
    (np.zeros(2), 2.0, "weight"),
])
def test_bad_updates_are_rejected(update, weight, match):
    with pytest.raises(UpdateRejected, match=match):
        FixedPointEncoder(2, 3).encode(update, weight)


@pytest.mark.parametrize("kwargs", [dict(clip=0.0), dict(clip=float("inf")), dict(precision_bits=0),
                                    dict(max_weight=-1.0), dict(dimension=0), dict(precision_bits=1),
                                    dict(noise_sigma=-1.0), dict(noise_sigma=float("nan"))])
def test_bad_configurations(kwargs):
    with pytest.raises(ConfigurationError):
        FixedPointEncoder(**{**dict(dimension=2, max_clients=3), **kwargs})


def test_noise_is_summed_with_the_encodings_and_decoded_centred():
    n, dim, sigma = 5, 20000, 1000.0
    enc = FixedPointEncoder(dim, n, clip=1.0, precision_bits=16, noise_sigma=sigma)
    x = np.full(dim, -1.0, np.float32)  # the lowest level: noise takes sums below the offset
    mean, weight = enc.decode(wrap_sum([enc.encode(x, 1.0) for _ in range(n)], enc.dtype), n)
    noise = mean.astype(np.float64) + 1.0
    assert weight == pytest.approx(n)
    assert abs(noise.mean()) < 0.05 * sigma / enc.scale
    assert noise.std() == pytest.approx(np.sqrt(n) * sigma / enc.scale / n, rel=0.03)


def test_noise_widens_the_ring():
    quiet = FixedPointEncoder(10, 1000, precision_bits=20)
    assert quiet.ring_bits == 30
    # 1000 * 2^19 + 16 * 2^19 * sqrt(1000) < 2^30, plus the sign bit
    assert FixedPointEncoder(10, 1000, precision_bits=20, noise_sigma=2.0**19).ring_bits == 31
    assert FixedPointEncoder(10, 1000, precision_bits=20, noise_sigma=2.0**22).ring_bits == 33
    with pytest.raises(ConfigurationError, match="wrap"):
        FixedPointEncoder(10, 1000, precision_bits=20, noise_sigma=2.0**60)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 200), st.integers(4, 24), st.floats(0.01, 1.0), st.data())
def test_l2_sensitivity_bounds_every_centred_encoding(dim, bits, norm, data):
    enc = FixedPointEncoder(dim, 4, clip=1.0, precision_bits=bits)
    direction = np.array(data.draw(st.lists(st.floats(-1, 1), min_size=dim, max_size=dim)))
    if not np.linalg.norm(direction) > 1e-6:
        direction = np.ones(dim)
    x = (direction / np.linalg.norm(direction) * norm).astype(np.float32)
    centred = enc.encode(x, 1.0)[:-1].astype(np.int64) - enc.offset
    assert np.linalg.norm(centred) <= enc.l2_sensitivity(float(np.linalg.norm(x.astype(np.float64))))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(2, 24), st.floats(0.1, 10), st.sampled_from([0.0, 0.5, 3.0]))
def test_decode_accepts_every_sum_honest_clients_can_produce(n, bits, clip, sigma):
    """Extreme honest encodings (every coordinate at +-clip, full weight, noise) are always decoded."""
    enc = FixedPointEncoder(3, n, clip, bits, noise_sigma=sigma)
    for sign in (1.0, -1.0):
        total = wrap_sum([enc.encode(np.full(3, sign * 2 * clip, np.float32), 1.0) for _ in range(n)], enc.dtype)
        mean, weight = enc.decode(total, n)
        assert weight == pytest.approx(n)


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_decode_refuses_a_sum_no_clipped_encodings_can_produce(dtype):
    enc = FixedPointEncoder(4, 8, precision_bits=20 if dtype is np.uint32 else 40)
    assert enc.dtype == dtype
    honest = [enc.encode(np.zeros(4, np.float32), 1.0) for _ in range(3)]
    shifted = honest[0].copy()
    shifted[1] += dtype(1 << 27 if dtype is np.uint32 else 1 << 50)  # an out-of-range ring word
    with pytest.raises(UpdateRejected, match="beyond"):
        enc.decode(wrap_sum([shifted, *honest[1:]], enc.dtype), 3)
    for weight_word in (0, 3 * enc.levels + 1, int(np.iinfo(dtype).max)):
        forged = honest[0].copy()
        forged[-1] = dtype(weight_word)
        total = wrap_sum([forged, *honest[1:]], enc.dtype)
        total[-1] = dtype(weight_word)
        with pytest.raises(UpdateRejected, match="weight"):
            enc.decode(total, 3)
