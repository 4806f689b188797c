"""Compact ciphertexts: bit packing round trips, the rounding's error bound, strict refusal of malformed blobs,
and the parameters' error budget measured on real decryptions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.ckks import CKKSAggregator, CKKSParams, compact
from secagg.ckks.params import ENCRYPTION_SIGMA
from secagg.errors import MessageError

Q54 = 18014398509404161  # q0: SEAL's 54-bit prime for N = 2048
PRIMES = [Q54, 1048583, (1 << 60) - 93, 12289]


def residues(seed: int, count: int, modulus: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, modulus, count, dtype=np.uint64)  # test data, not secrets


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(0, 700), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip(bits, count, seed):
    values = np.random.default_rng(seed).integers(0, 1 << bits, count, dtype=np.uint64)
    packed = compact.pack(values, bits)
    assert len(packed) == compact.packed_size(count, bits)
    np.testing.assert_array_equal(compact.unpack(packed, count, bits), values)
    # the bit string is little-endian, value i at bits [i bits, (i + 1) bits): Python's integers agree
    assert int.from_bytes(packed, "little") == sum(int(v) << (i * bits) for i, v in enumerate(values))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(PRIMES), st.integers(0, 40), st.integers(1, 500), st.integers(0, 2**32 - 1))
def test_rounding_error_is_at_most_half_a_step(modulus, drop, count, seed):
    drop = min(drop, modulus.bit_length() - 1)
    x = residues(seed, count, modulus)
    x[:3] = [0, modulus - 1, modulus - (1 << max(drop - 1, 0))][: len(x[:3])]  # the edges, the wrap included
    bits = modulus.bit_length() - drop
    y = compact.round_away(x, drop, bits)
    assert int(y.max(initial=0)) < 1 << bits
    back = compact.restore(y, drop, modulus)
    assert int(back.max(initial=0)) < modulus
    diff = (back.astype(object) - x.astype(object)) % modulus
    centred = np.minimum(diff, modulus - diff)
    assert max(centred, default=0) <= (1 << drop) // 2


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([Q54, 1048583]), st.integers(0, 30), st.integers(0, 30), st.integers(1, 3 * 64),
       st.integers(0, 2**32 - 1))
def test_compress_decompress_round_trip(modulus, d0, d1, length, seed):
    layout = compact.Layout(modulus, 64, min(d0, modulus.bit_length() - 1), min(d1, modulus.bit_length() - 1))
    count = -(-length // 64)
    c0, c1 = (residues(seed + i, count * 64, modulus).reshape(count, 64) for i in range(2))
    blobs, out0, out1 = compact.compress(layout, c0, c1, length)
    assert [len(b) for b in blobs] == [layout.blob_size(r) for r in compact.reals_of(layout, length)]
    back0, back1 = compact.decompress(layout, blobs, length)
    np.testing.assert_array_equal(back0, out0)
    np.testing.assert_array_equal(back1, out1)
    assert not out0.reshape(-1)[length:].any()  # c0 stops after the last real
    diff = (out0.reshape(-1)[:length].astype(object) - c0.reshape(-1)[:length].astype(object)) % modulus
    assert max(min(d, modulus - d) for d in diff) <= (1 << layout.c0_drop) // 2


LAYOUT = compact.Layout(Q54, 64, 27, 22)


def _blobs(length=100):
    count = -(-length // 64)
    c = residues(1, 2 * count * 64, Q54).reshape(2, count, 64)
    return compact.compress(LAYOUT, c[0], c[1], length)[0]


def _set_top_bit(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] | 0x80]) + blob[index + 1:]


@pytest.mark.parametrize("edit, match", [
    (lambda b: b[:1], "compact ciphertexts"),
    (lambda b: b + b[:1], "compact ciphertexts"),
    (lambda b: [b[0][:-1], b[1]], "bytes"),
    (lambda b: [b[0], b[1] + b"\0"], "bytes"),
    (lambda b: [b[0], b""], "bytes"),
    (lambda b: [bytes([0x5E]) + b[0][1:], b[1]], "format"),
    (lambda b: [b[0], "text"], "bytes"),
    (lambda b: [b[0], _set_top_bit(b[1], compact.packed_size(36, 27))], "padding"),  # c0: 36 x 27 bits + 4
])
def test_malformed_blobs_are_refused(edit, match):
    blobs = _blobs()
    compact.decompress(LAYOUT, blobs, 100)
    with pytest.raises(MessageError, match=match):
        compact.decompress(LAYOUT, edit(blobs), 100)


def test_a_whole_residue_out_of_range_is_refused():
    layout = compact.Layout(1048583, 64, 0, 0)  # nothing dropped: values travel whole and must be below q
    c = residues(2, 128, 1048583).reshape(2, 1, 64)
    blobs = compact.compress(layout, c[0], c[1], 64)[0]
    compact.decompress(layout, blobs, 64)
    bad = c[1].copy()
    bad[0, 5] = 1048583
    blob = bytes([compact.FORMAT]) + compact.pack(c[0].reshape(-1), 21) + compact.pack(bad.reshape(-1), 21)
    with pytest.raises(MessageError, match="residue"):
        compact.decompress(layout, [blob], 64)


@pytest.mark.parametrize("clients", [2, 10, 100, 1000])
def test_the_error_budget_holds_on_real_decryptions(clients):
    """One client's decryption error per coordinate, measured, is what the parameters predict (encryption noise
    plus c0's and c1's rounding, the latter times the secret key), and at most masking's."""
    params = CKKSParams(max_clients=clients)
    aggregator = CKKSAggregator(params)
    values = np.random.default_rng(clients).uniform(-1, 1, 3 * params.poly_modulus_degree)
    public, holder = aggregator.public, aggregator.key_holder
    ciphers = public.load_upload(public.encrypt(values), len(values))
    decrypted = public.decode([holder._decrypt(c) for c in ciphers], len(values))
    error = np.std(decrypted - values)
    assert 0.9 * params.error_std < error < 1.1 * params.error_std
    assert params.error_std <= params.masking_error_std
    assert params.error_std * params.scale > ENCRYPTION_SIGMA  # the rounding, not the encryption, dominates
    assert (params.layout.c0_bits + params.layout.c1_bits) / 8 <= 8.5  # bytes per real
