import os

import numpy as np
import pytest

from secagg.errors import AuthenticationError, ConfigurationError, MessageError
from secagg.primitives.aead import open_sealed, seal
from secagg.primitives.keys import AgreementKey, Purpose, SigningKey, verify_signature
from secagg.primitives.prg import MaskExpander

SESSION = bytes(16)


def test_prg_is_deterministic_and_seed_dependent():
    e = MaskExpander(1000)
    seed = os.urandom(32)
    a = e.expand(seed).copy()
    np.testing.assert_array_equal(a, e.expand(seed))
    assert not np.array_equal(a, e.expand(os.urandom(32)))


def test_prg_add_subtract_cancel_modulo_the_word():
    for dtype in (np.uint32, np.uint64):
        e = MaskExpander(500, dtype)
        acc = np.arange(500, dtype=dtype)
        seed = os.urandom(32)
        e.add(seed, acc)
        e.subtract(seed, acc)
        np.testing.assert_array_equal(acc, np.arange(500, dtype=dtype))


def test_prg_output_bytes_look_uniform():
    words = MaskExpander(1 << 16).expand(os.urandom(32))
    counts = np.bincount(words.view(np.uint8), minlength=256)
    expected = counts.sum() / 256
    assert ((counts - expected) ** 2 / expected).sum() < 340


def test_prg_rejects_bad_settings():
    with pytest.raises(ConfigurationError):
        MaskExpander(10, np.int32)
    with pytest.raises(ConfigurationError):
        MaskExpander(0)
    with pytest.raises(ConfigurationError):
        MaskExpander(10).expand(b"short")


def test_key_agreement_is_symmetric_and_bound_to_context():
    a, b = AgreementKey.generate(), AgreementKey.generate()
    kw = dict(session=SESSION, round=3, purpose=Purpose.PAIRWISE_MASK)
    k_ab = a.derive(b.public_bytes(), ids=(1, 2), **kw)
    assert k_ab == b.derive(a.public_bytes(), ids=(2, 1), **kw)
    assert k_ab != a.derive(b.public_bytes(), ids=(1, 3), **kw)
    assert k_ab != a.derive(b.public_bytes(), ids=(1, 2), session=SESSION, round=4, purpose=Purpose.PAIRWISE_MASK)
    assert k_ab != a.derive(b.public_bytes(), ids=(1, 2), session=SESSION, round=3,
                            purpose=Purpose.SHARE_ENCRYPTION)
    assert k_ab != a.derive(b.public_bytes(), ids=(1, 2), session=bytes([1]) * 16, round=3,
                            purpose=Purpose.PAIRWISE_MASK)


def test_private_key_round_trip_and_bad_keys():
    a = AgreementKey.generate()
    assert AgreementKey.from_private_bytes(a.private_bytes()).public_bytes() == a.public_bytes()
    with pytest.raises(MessageError):
        AgreementKey.from_private_bytes(b"short")
    with pytest.raises(MessageError):
        a.derive(b"short", session=SESSION, round=0, ids=(0, 1), purpose=Purpose.PAIRWISE_MASK)


def test_aead_round_trip_and_every_tampering_fails_the_same_way():
    key = os.urandom(32)
    sealed = seal(key, b"secret share", b"ad")
    assert open_sealed(key, sealed, b"ad") == b"secret share"
    variants = [sealed[:-1], sealed[:5], b"", bytes([sealed[0] ^ 1]) + sealed[1:],
                sealed[:20] + bytes([sealed[20] ^ 1]) + sealed[21:]]
    for bad in variants:
        with pytest.raises(AuthenticationError, match="^decryption failed$"):
            open_sealed(key, bad, b"ad")
    with pytest.raises(AuthenticationError):
        open_sealed(key, sealed, b"other ad")
    with pytest.raises(AuthenticationError):
        open_sealed(os.urandom(32), sealed, b"ad")


def test_signatures_verify_or_raise():
    key = SigningKey.generate()
    sig = key.sign(b"message")
    verify_signature(key.public_bytes(), sig, b"message")
    with pytest.raises(AuthenticationError):
        verify_signature(key.public_bytes(), sig, b"other")
    with pytest.raises(AuthenticationError):
        verify_signature(SigningKey.generate().public_bytes(), sig, b"message")
    with pytest.raises(AuthenticationError):
        verify_signature(b"short", sig, b"message")


@pytest.mark.parametrize("length", [1, 1000, (1 << 16) + 7, 3 * (1 << 16)])
def test_chunked_apply_equals_one_mask_at_a_time(length):
    e = MaskExpander(length)
    plus, minus = [os.urandom(32) for _ in range(3)], [os.urandom(32) for _ in range(2)]
    expected = np.arange(length, dtype=np.uint32)
    for s in plus:
        e.add(s, expected)
    for s in minus:
        e.subtract(s, expected)
    got = np.arange(length, dtype=np.uint32)
    e.apply(plus, minus, got)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ConfigurationError):
        e.apply(plus, minus, np.zeros(length + 1, np.uint32))
