"""The aggregator <-> key holder messages round-trip, and a release is checked against its request."""

from dataclasses import replace

import numpy as np
import pytest

from secagg.ckks.decryption_wire import (decode_release, decode_request, encode_release, encode_request,
                                         request_size)
from secagg.ckks.request import DecryptionRequest, Release, SignedSketch
from secagg.errors import MessageError


def _request(round_index=3):
    contributions = (SignedSketch(1, b"d" * 32, b"s" * 64, (1, 2**55, 3), b"S" * 64),
                     SignedSketch(2, b"e" * 32, b"t" * 64, (2**64 - 1, 0, 7), b"T" * 64))
    return DecryptionRequest(b"x" * 16, round_index, b"k" * 32, 5, (b"sum-a", b"sum-bb"), contributions)


def test_request_and_release_round_trip():
    request = _request()
    encoded = encode_request(request)
    assert decode_request(encoded) == request
    assert request_size(request) == len(encoded)
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


def test_a_truncated_or_extended_request_is_refused():
    encoded = encode_request(_request())
    with pytest.raises(MessageError):
        decode_request(encoded[:-5])
    with pytest.raises(MessageError):
        decode_request(encoded + b"\0")


def test_a_request_for_fewer_than_two_reals_is_refused():
    with pytest.raises(MessageError, match="reals"):
        decode_request(encode_request(replace(_request(), length=1)))


def test_format_1_and_2_requests_are_refused():
    from secagg.wire import Envelope

    env = Envelope.from_bytes(encode_request(_request()))
    old = replace(env, body=b"\x00\x00\x00\x05" + env.body[1 + 32 + 4:])  # format 1 began with u32 length
    v2 = replace(env, body=b"\x02" + env.body[1:])  # format 2 carried every client's ciphertexts
    for message in (old, v2):
        with pytest.raises(MessageError, match="format"):
            decode_request(message.to_bytes())


def test_sketches_of_different_lengths_cannot_be_encoded():
    request = _request()
    uneven = replace(request, contributions=(request.contributions[0],
                                             replace(request.contributions[1], sketch=(1, 2))))
    with pytest.raises(MessageError, match="rows"):
        encode_request(uneven)
