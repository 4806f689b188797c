import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import ConfigurationError, MessageError
from secagg.primitives.shamir import ELEMENT_BYTES, PRIME, Share, reconstruct, split


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(2, 12), st.data())
def test_any_t_shares_reconstruct(secret, n, data):
    t = data.draw(st.integers(1, n))
    shares = split(secret, t, list(range(1, n + 1)))
    subset = data.draw(st.permutations(shares))[:t]
    assert reconstruct(subset, t, 32) == secret


def test_t_minus_one_shares_are_uniform_whatever_the_secret():
    """With t = 2 a single share is s + a*x for uniform a: its low byte is uniform for any secret."""
    for secret in (bytes(32), b"\xff" * 32):
        counts = [0] * 256
        trials = 5120
        for _ in range(trials):
            counts[split(secret, 2, [1, 2])[0].y & 0xFF] += 1
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
        reconstruct(split(b"x" * 32, 3, [1, 2, 3])[:2], 3, 32)


def test_share_bytes_round_trip_and_validation():
    share = split(os.urandom(32), 2, [5, 6])[0]
    assert Share.from_bytes(5, share.to_bytes()) == share
    with pytest.raises(MessageError):
        Share.from_bytes(5, b"short")
    with pytest.raises(MessageError):
        Share.from_bytes(5, (PRIME + 1).to_bytes(ELEMENT_BYTES, "big"))


def test_inconsistent_shares_are_detected_when_they_overflow():
    shares = split(b"\x00" * 32, 2, [1, 2])
    bad = [shares[0], Share(2, (shares[1].y + 12345) % PRIME)]
    with pytest.raises(MessageError):
        reconstruct(bad, 2, 32)
