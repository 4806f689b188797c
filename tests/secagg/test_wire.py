import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from secagg.errors import MessageError
from secagg.wire import (
    HEADER_BYTES,
    SERVER_ID,
    BodyReader,
    BodyWriter,
    Envelope,
    MessageKind,
)

SESSION = bytes(range(16))


def envelope(body: bytes = b"abc") -> bytes:
    return Envelope(MessageKind.PLAIN_UPDATE, SESSION, 7, 3, body).to_bytes()


def test_envelope_round_trips():
    env = Envelope.from_bytes(envelope(b"payload"))
    assert (env.kind, env.session, env.round, env.sender, env.body) == (
        MessageKind.PLAIN_UPDATE, SESSION, 7, 3, b"payload")


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:4] + bytes([99]) + b[5:], "version"),
        (lambda b: b[:5] + bytes([250]) + b[6:], "kind"),
        (lambda b: b[:-1], "length"),
        (lambda b: b + b"\x00", "length"),
        (lambda b: b[:10], "shorter"),
    ],
)
def test_malformed_envelopes_raise_message_error(mutate, match):
    with pytest.raises(MessageError, match=match):
        Envelope.from_bytes(mutate(envelope()))


def test_body_limit_is_enforced():
    with pytest.raises(MessageError, match="exceeds"):
        Envelope.from_bytes(envelope(b"x" * 100), max_body=99)


def test_non_bytes_rejected():
    with pytest.raises(MessageError, match="bytes"):
        Envelope.from_bytes("not bytes")  # type: ignore[arg-type]


def test_expect_checks_kind():
    env = Envelope(MessageKind.MODEL_BROADCAST, SESSION, 0, SERVER_ID, b"")
    with pytest.raises(MessageError, match="expected a PLAIN_UPDATE"):
        env.expect(MessageKind.PLAIN_UPDATE)


@given(hnp.arrays(st.sampled_from([np.float32, np.float64, np.uint32, np.uint64, np.int64, np.uint8]),
                  hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
def test_arrays_round_trip(array):
    body = BodyWriter().array(array).u32(5).to_bytes()
    reader = BodyReader(body)
    out = reader.array(dtype=array.dtype, shape=array.shape)
    assert reader.u32() == 5
    reader.finish()
    np.testing.assert_array_equal(out, array)


def test_big_endian_input_is_written_little_endian():
    big = np.arange(4, dtype=">f4")
    out = BodyReader(BodyWriter().array(big).to_bytes()).array(dtype="f4", shape=(4,))
    np.testing.assert_array_equal(out, np.arange(4, dtype=np.float32))


def test_array_dtype_and_shape_are_checked():
    body = BodyWriter().array(np.zeros(3, dtype=np.float32)).to_bytes()
    with pytest.raises(MessageError, match="dtype"):
        BodyReader(body).array(dtype="f8", shape=(3,))
    with pytest.raises(MessageError, match="shape"):
        BodyReader(body).array(dtype="f4", shape=(4,))


def test_truncated_and_trailing_bodies():
    body = BodyWriter().array(np.zeros(3, dtype=np.float32)).blob(b"xy").to_bytes()
    with pytest.raises(MessageError, match="truncated"):
        r = BodyReader(body[:-1])
        r.array(dtype="f4", shape=(3,))
        r.blob()
    r = BodyReader(body + b"!")
    r.array(dtype="f4", shape=(3,))
    r.blob()
    with pytest.raises(MessageError, match="trailing"):
        r.finish()


def test_unwritable_dtype_is_refused():
    with pytest.raises(MessageError, match="wire code"):
        BodyWriter().array(np.zeros(2, dtype=np.complex64))


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_message_error(data):
    try:
        env = Envelope.from_bytes(data)
    except MessageError:
        return
    reader = BodyReader(env.body)
    try:
        reader.array(dtype="f4", shape=(2,))
        reader.finish()
    except MessageError:
        pass


def test_header_size_is_documented_value():
    assert HEADER_BYTES == 34
