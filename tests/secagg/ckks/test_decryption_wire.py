"""The aggregator <-> key holder messages round-trip, and a release is checked against its request."""

import numpy as np
import pytest

from secagg.ckks.decryption_wire import decode_release, decode_request, encode_release, encode_request
from secagg.ckks.keyholder import Contribution, DecryptionRequest, Release
from secagg.errors import MessageError


def _request(round_index=3):
    record = (Contribution(1, b"d" * 32, b"s" * 64), Contribution(2, b"e" * 32, b"t" * 64))
    return DecryptionRequest(b"x" * 16, round_index, 5, (b"cipher-a", b"cipher-b"), record)


def test_request_and_release_round_trip():
    request = _request()
    assert decode_request(encode_request(request)) == request
    release = Release(np.arange(4.0), 0.75)
    back = decode_release(request, encode_release(request, release))
    np.testing.assert_array_equal(back.weighted_sum, release.weighted_sum)
    assert back.weight == 0.75


def test_a_release_for_another_round_or_length_is_refused():
    request = _request()
    other = encode_release(_request(round_index=4), Release(np.arange(4.0), 1.0))
    with pytest.raises(MessageError):
        decode_release(request, other)
    with pytest.raises(MessageError):
        decode_release(request, encode_release(request, Release(np.arange(3.0), 1.0)))
    with pytest.raises(MessageError):
        decode_release(request, encode_release(request, Release(np.array([0, 1, np.nan, 3.0]), 1.0)))


def test_a_truncated_request_is_refused():
    with pytest.raises(MessageError):
        decode_request(encode_request(_request())[:-5])


def test_a_request_for_fewer_than_two_reals_is_refused():
    from dataclasses import replace

    with pytest.raises(MessageError, match="reals"):
        decode_request(encode_request(replace(_request(), length=1)))
