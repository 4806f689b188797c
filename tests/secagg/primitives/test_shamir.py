import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ConfigurationError, MessageError
from secagg.primitives.shamir import PRIME, SHARE_BYTES, Share, reconstruct, reconstruct_many, split


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(2, 12), st.data())
def test_any_t_shares_reconstruct(secret, n, data):
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, PRIME - 1), min_size=n, max_size=n, unique=True))
    shares = split(secret, t, xs)
    subset = data.draw(st.permutations(shares))[:t]
    assert reconstruct(subset, t) == secret


def test_batched_reconstruction_of_many_owners():
    secrets = [os.urandom(32) for _ in range(50)]
    groups = [split(s, 4, [i + 1, i + 2, i + 7, i + 9, i + 11])[1:] for i, s in enumerate(secrets)]
    assert reconstruct_many(groups, 4) == secrets


def test_extreme_secrets():
    for secret in (bytes(32), b"\xff" * 32):
        assert reconstruct(split(secret, 3, [1, 2, 3])[::-1], 3) == secret


def test_t_minus_one_shares_are_uniform_whatever_the_secret():
    """With t = 2 a single share is s + a*x for uniform a: its low byte is uniform for any secret."""
    for secret in (bytes(32), b"\xff" * 32):
        counts = [0] * 256
        trials = 5120
        for _ in range(trials):
            counts[int(split(secret, 2, [1, 2])[0].limbs[-1]) & 0xFF] += 1
        expected = trials / 256
        chi2 = sum((c - expected) ** 2 / expected for c in counts)
        assert chi2 < 340  # 255 degrees of freedom: p < 0.0003 above this


def test_bad_parameters():
    with pytest.raises(ConfigurationError):
        split(b"x" * 32, 4, [1, 2, 3])
    with pytest.raises(ConfigurationError):
        split(b"x" * 32, 2, [1, 1])
    with pytest.raises(ConfigurationError):
        split(b"x" * 32, 2, [0, 1])
    with pytest.raises(ConfigurationError):
        split(b"x" * 31, 2, [1, 2])
    with pytest.raises(ConfigurationError):
        reconstruct(split(b"x" * 32, 3, [1, 2, 3])[:2], 3)
    with pytest.raises(MessageError, match="duplicate"):
        shares = split(b"x" * 32, 2, [1, 2])
        reconstruct([shares[0], shares[0]], 2)


def test_share_validation():
    shares = split(os.urandom(32), 2, [5, 6])
    with pytest.raises(MessageError):
        Share(5, b"short")
    with pytest.raises(MessageError):
        Share(0, shares[0].data)
    with pytest.raises(MessageError, match="outside the field"):
        reconstruct([Share(5, b"\xff" * SHARE_BYTES), shares[1]], 2)


def test_a_corrupted_share_never_yields_the_secret():
    secret = os.urandom(32)
    shares = split(secret, 2, [1, 2])
    bad = Share(2, ((shares[1].limbs + 1) % PRIME).astype(">u4").tobytes())
    try:
        assert reconstruct([shares[0], bad], 2) != secret
    except MessageError:
        pass
