"""The linear sketch: exact modular arithmetic, linearity over SEAL's ciphertext addition, uniform rows, and a
client's sketch over exactly what the aggregator adds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.ckks import CKKSParams, KeyHolder, sketch
from secagg.ckks.packing import PublicContext
from secagg.errors import ConfigurationError

Q55 = 36028797018652673  # SEAL's 55-bit prime for N = 4096
Q54 = 18014398509404161  # SEAL's 54-bit prime for N = 2048 (q0)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.sampled_from([Q55, (1 << 60) - 93, 1048583]), st.binary(min_size=32, max_size=32),
       st.integers(0, 2**32 - 1))
def test_the_sketch_is_the_exact_dot_product(n, q, rho, seed):
    """Cross-checked against Python's unbounded integers (an independent computation)."""
    x = np.random.default_rng(seed).integers(0, q, n, dtype=np.uint64)  # test data, not secrets
    rows = sketch.challenge_rows(rho, n, q)
    assert rows.shape == (sketch.rows_for(q), n) and int(rows.max()) < q
    expected = tuple(sum(int(r) * int(v) for r, v in zip(row, x)) % q for row in rows)
    assert sketch.sketch(rho, x, q) == expected


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 120), st.integers(1, 40), st.sampled_from([Q54, 1048583]), st.binary(min_size=32, max_size=32))
def test_the_streamed_sketch_equals_the_whole_rows_one_piece_size_or_another(n, piece, q, rho):
    """Rows are generated a piece at a time; pieces that cross row ends give the sketch of the whole rows."""
    x = np.random.default_rng(n).integers(0, q, n, dtype=np.uint64)  # test data, not secrets
    rows = sketch.challenge_rows(rho, n, q)
    expected = tuple(sum(int(r) * int(v) for r, v in zip(row, x)) % q for row in rows)
    original, sketch._PIECE = sketch._PIECE, piece
    try:
        assert sketch.sketch(rho, x, q) == expected
    finally:
        sketch._PIECE = original


def test_rows_for_reaches_128_bits():
    for q in (Q55, 1048583, (1 << 60) - 93):
        assert sketch.rows_for(q) * np.floor(np.log2(q)) >= 128
    assert sketch.rows_for(Q55) == 3


def test_rows_are_uniform_and_depend_on_the_challenge():
    rows = sketch.challenge_rows(b"a" * 32, 200_000, Q55)
    assert not np.array_equal(rows, sketch.challenge_rows(b"b" * 32, 200_000, Q55))
    np.testing.assert_array_equal(rows, sketch.challenge_rows(b"a" * 32, 200_000, Q55))
    top = (rows.reshape(-1) >> np.uint64(51)).astype(np.int64)  # 16 buckets of the top bits
    counts = np.bincount(top, minlength=16)
    assert counts.min() > 0.97 * counts.mean() and counts.max() < 1.03 * counts.mean()


def test_the_sketch_is_linear_over_seal_addition():
    params = CKKSParams()
    public = PublicContext(params, KeyHolder(params, {}).public_key)
    assert public.modulus == Q54
    rng = np.random.default_rng(0)
    a, b = (public.load_upload(public.encrypt(rng.uniform(-1, 1, 3000)), 3000) for _ in range(2))
    rho = b"r" * 32
    rows = sketch.rows_for(Q54)
    separate = sketch.add([sketch.sketch(rho, sketch.coefficients(a), Q54),
                           sketch.sketch(rho, sketch.coefficients(b), Q54)], Q54, rows)
    for acc, other in zip(a, b):
        public.add_inplace(acc, other)
    assert sketch.sketch(rho, sketch.coefficients(a), Q54) == separate
    assert len(sketch.coefficients(a)) == 2 * 2 * params.poly_modulus_degree  # 2 ciphertexts of 2 polynomials


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 5000))
def test_a_client_sketches_exactly_what_the_aggregator_adds(length):
    """The coefficients a client keeps for its sketch are those of the ciphertexts the aggregator rebuilds
    from its compact upload (c0 cut after the last real included)."""
    from secagg.aggregation import RoundContext
    from secagg.ckks.protocol import CKKSClient
    from secagg.primitives.keys import SigningKey

    params = CKKSParams()
    public = PublicContext(params, KeyHolder(params, {}).public_key)
    client = CKKSClient(RoundContext.new(1, (0, 1), length), 0, np.linspace(-1, 1, length), 1.0, public,
                        SigningKey.generate())
    coefficients = client._coefficients()  # rebuilt from the compact upload it keeps
    np.testing.assert_array_equal(coefficients, sketch.coefficients(public.load_upload(client._blobs, length + 1)))


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigurationError):
        sketch.challenge_rows(b"short", 10, Q55)
    with pytest.raises(ConfigurationError):
        sketch.sketch(b"r" * 32, np.zeros(3, np.int64), Q55)
    with pytest.raises(ConfigurationError):
        sketch.sketch(b"r" * 32, np.zeros(3, np.uint64), (1 << 62) + 1)


def test_fast_coefficients_equal_the_per_coefficient_accessor(monkeypatch):
    """The parsed serialization (second, independent reading) agrees with SEAL's own accessor; without
    libzstd the accessor is used."""
    from secagg.ckks import seal_data

    params = CKKSParams()
    public = PublicContext(params, KeyHolder(params, {}).public_key)
    ciphers = public.load_upload(public.encrypt(np.linspace(-1, 1, 5000)), 5000)
    slow = [np.fromiter(map(c.__getitem__, range(2 * params.poly_modulus_degree)), np.uint64) for c in ciphers]
    np.testing.assert_array_equal(sketch.coefficients(ciphers), np.concatenate(slow))
    if seal_data._ZSTD is not None:
        assert seal_data._parsed(ciphers[0], len(slow[0])) is not None  # the fast path is really taken
    monkeypatch.setattr(seal_data, "_ZSTD", None)
    np.testing.assert_array_equal(sketch.coefficients(ciphers), np.concatenate(slow))
