"""CKKS under an active adversary (issue 11, items 5 and 6): the sender lies, the key holder and the aggregator
refuse with a typed error, and nothing is decrypted.

A malicious aggregator asks the key holder to decrypt what it chose; a malicious client sends SEAL-valid
ciphertexts that are not fresh encryptions. SEAL ciphertexts are crafted here byte by byte (SEAL's own
uncompressed serialization: header, parms id, NTT flag, size, degree, moduli count, scale, correction factor,
data), so that SEAL itself accepts them.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
import tenseal.sealapi as seal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.aggregation import RoundContext
from secagg.ckks import CKKSAggregator, CKKSParams, KeyHolder
from secagg.ckks import seal_io
from secagg.ckks.decryption_wire import decode_request, encode_request
from secagg.ckks.request import DecryptionRequest, SignedContribution
from secagg.ckks.signing import contribution_digest, contribution_payload
from secagg.envelopes import seal_envelope
from secagg.errors import (AggregateOutOfRange, AggregationAborted, DecryptionRefused, MessageError,
                           SecAggError)
from secagg.wire import SERVER_ID, BodyWriter, Envelope, MessageKind

PARAMS = CKKSParams(max_weight=10.0)
CLIENTS = (0, 1, 2, 3)
DIM = 20


class CountingDecryptor:
    """Stands between the key holder and SEAL's decryptor: counts every decryption."""

    def __init__(self, inner: seal.Decryptor) -> None:
        self.inner, self.calls = inner, 0

    def decrypt(self, cipher: seal.Ciphertext, plain: seal.Plaintext) -> None:
        self.calls += 1
        self.inner.decrypt(cipher, plain)


class Intercept:
    def decrypt(self, request: DecryptionRequest):
        self.request = request
        raise DecryptionRefused("intercepted")


@dataclasses.dataclass
class Setting:
    aggregator: CKKSAggregator
    ctx: RoundContext
    request: DecryptionRequest  # the honest request of round ctx.round, never sent
    counter: CountingDecryptor

    @property
    def holder(self):
        return self.aggregator.key_holder


def honest_round(aggregator: CKKSAggregator, ctx: RoundContext, bad: dict[int, bytes] | None = None):
    """Clients of ``ctx`` send honest updates (or ``bad[c]``); returns the server session after collection."""
    rng = np.random.default_rng(ctx.round)
    server = aggregator.server_session(ctx)
    for c in ctx.clients:
        message = aggregator.client_session(ctx, c, rng.uniform(-1, 1, DIM), 10.0).start()
        server.collect(c, (bad or {}).get(c, message))
    server.close_stage()
    return server


@pytest.fixture
def setting() -> Setting:
    aggregator = CKKSAggregator(PARAMS)
    ctx = RoundContext.new(5, CLIENTS, DIM)
    server = honest_round(aggregator, ctx)
    intercept = Intercept()
    server.key_holder = intercept
    with pytest.raises(AggregationAborted):
        server.result()
    counter = CountingDecryptor(aggregator.key_holder._decryptor)
    aggregator.key_holder._decryptor = counter
    return Setting(aggregator, ctx, intercept.request, counter)


def refused(setting: Setting, request: DecryptionRequest, error: type[SecAggError], match: str = "") -> None:
    """The key holder refuses ``request`` with exactly ``error``, decrypts nothing and spends no round."""
    with pytest.raises(error, match=match) as info:
        setting.holder.decrypt(request)
    assert type(info.value) is error
    assert setting.counter.calls == 0
    assert setting.holder._last_released is None


def with_contribution(request: DecryptionRequest, index: int, **changes) -> DecryptionRequest:
    contributions = list(request.contributions)
    contributions[index] = dataclasses.replace(contributions[index], **changes)
    return dataclasses.replace(request, contributions=tuple(contributions))


# SEAL ciphertexts made by hand -------------------------------------------------------------------------------

def _seal_header(body: bytes, minor: int) -> bytes:
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 4, minor, 0, 0, 16 + len(body)) + body  # compr_mode none


def craft(aggregator: CKKSAggregator, c0: np.ndarray, c1: np.ndarray, *, parms_id=None, ntt=True,
          scale: float | None = None) -> bytes:
    """A serialized ciphertext ``(c0, c1)`` (NTT-form residues mod q0) that SEAL loads as valid."""
    public = aggregator.public
    minor = seal_io.dump(public.load(public.encrypt(np.zeros(1))[0]))[4]
    data = np.concatenate([c0, c1]).astype("<u8")
    dyn = _seal_header(struct.pack("<Q", data.size) + data.tobytes(), minor)
    body = struct.pack("<4Q", *(parms_id or public.context.first_parms_id())) + bytes([ntt])
    body += struct.pack("<QQQdQ", 2, PARAMS.poly_modulus_degree, 1, scale or PARAMS.scale, 1) + dyn
    return _seal_header(body, minor)


def zero_and_constant(aggregator: CKKSAggregator, constant: int) -> tuple[bytes, ...]:
    """``(0, constant)``: decrypts to ``constant * s``, the secret key itself scaled (the issue's attack)."""
    n, count = PARAMS.poly_modulus_degree, aggregator.public.ciphertexts_for(DIM + 1)
    return (craft(aggregator, np.zeros(n, np.uint64), np.full(n, constant, np.uint64)),) * count


def test_crafting_is_faithful(setting):
    """The crafted (0, c) really is SEAL-valid and decrypts to c * s: the attack would work on a naive holder."""
    blob = zero_and_constant(setting.aggregator, 1 << 20)[0]
    cipher = setting.aggregator.public.load(blob)
    plain = seal.Plaintext()
    setting.counter.inner.decrypt(cipher, plain)
    assert np.abs(np.asarray(setting.aggregator.public.encoder.decode_complex(plain))).max() > 0


# 5. A malicious aggregator: chosen ciphertexts, substitutes, differences, replays, dropped signatures -------

def test_a_crafted_zero_constant_ciphertext_is_refused(setting):
    crafted = zero_and_constant(setting.aggregator, 1 << 40)
    refused(setting, with_contribution(setting.request, 0, ciphertexts=crafted), DecryptionRefused,
            "not validly signed")
    # ... also as a contribution of its own (not enrolled) and as every contribution at once
    refused(setting, dataclasses.replace(setting.request, contributions=setting.request.contributions + (
        SignedContribution(99, crafted, bytes(64)),)), DecryptionRefused, "not enrolled")
    all_crafted = tuple(dataclasses.replace(c, ciphertexts=crafted) for c in setting.request.contributions)
    refused(setting, dataclasses.replace(setting.request, contributions=all_crafted), DecryptionRefused,
            "not validly signed")


def test_a_format_1_request_with_a_crafted_sum_is_refused(setting):
    """The old request (one summed ciphertext and a record of digests) cannot even be parsed any more."""
    old = BodyWriter().u32(DIM + 1).u32(1).blob(zero_and_constant(setting.aggregator, 1 << 40)[0])
    old.u32(len(setting.request.contributions))
    for c in setting.request.contributions:
        old.u32(c.client).raw(contribution_digest(c.ciphertexts)).raw(c.signature)
    message = Envelope(MessageKind.CKKS_DECRYPT_REQUEST, setting.ctx.session, setting.ctx.round, SERVER_ID,
                       old.to_bytes()).to_bytes()
    with pytest.raises(MessageError, match="format"):
        decode_request(message)
    assert setting.counter.calls == 0


def test_one_clients_ciphertext_as_the_sum_is_refused(setting):
    request, first = setting.request, setting.request.contributions[0]
    refused(setting, dataclasses.replace(request, contributions=(first,)), DecryptionRefused, "min_clients")
    refused(setting, dataclasses.replace(request, contributions=(first, first)), DecryptionRefused, "twice")
    refused(setting, with_contribution(request, 1, ciphertexts=first.ciphertexts), DecryptionRefused,
            "not validly signed")


def _sum_minus_client_0(setting: Setting) -> tuple[bytes, ...]:
    public = setting.aggregator.public
    rest = public.sum(tuple(c.ciphertexts for c in setting.request.contributions[1:]))
    return tuple(seal_io.dump(c) for c in rest)


def test_sum_minus_client_0_is_refused(setting):
    difference = _sum_minus_client_0(setting)
    refused(setting, with_contribution(setting.request, 1, ciphertexts=difference), DecryptionRefused,
            "not validly signed")
    # the honest aggregate, then the same round without client 0: a second release of one round is refused
    setting.holder.decrypt(setting.request)
    calls = setting.counter.calls
    without_0 = dataclasses.replace(setting.request, contributions=setting.request.contributions[1:])
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        setting.holder.decrypt(without_0)
    with pytest.raises(DecryptionRefused, match="already decrypted"):  # ... whatever session it claims
        setting.holder.decrypt(dataclasses.replace(without_0, session=bytes(16)))
    assert setting.counter.calls == calls


def test_replays_are_refused(setting):
    aggregator, request = setting.aggregator, setting.request
    later = intercepted_later_round(aggregator, setting.ctx.round + 1)
    # a contribution of this round replayed into the next one
    replayed = with_contribution(later, 0, ciphertexts=request.contributions[0].ciphertexts,
                                 signature=request.contributions[0].signature)
    refused(setting, replayed, DecryptionRefused, "not validly signed")
    setting.holder.decrypt(later)
    calls = setting.counter.calls
    for again in (later, request):  # the same round again, and an earlier round after a later one
        with pytest.raises(DecryptionRefused, match="already decrypted"):
            setting.holder.decrypt(again)
    # another run's key holder (a fresh key pair per run), with the same clients, refuses this run's request
    other = KeyHolder(PARAMS, aggregator.identities.directory)
    assert other.key_id != setting.holder.key_id
    with pytest.raises(DecryptionRefused, match="current key"):
        other.decrypt(request)
    with pytest.raises(DecryptionRefused, match="not validly signed"):  # relabelled: the signatures bind the key
        other.decrypt(dataclasses.replace(request, key_id=other.key_id))
    assert setting.counter.calls == calls


def intercepted_later_round(aggregator: CKKSAggregator, round_index: int) -> DecryptionRequest:
    ctx = RoundContext.new(round_index, CLIENTS, DIM)
    server = honest_round(aggregator, ctx)
    holder, intercept = aggregator.key_holder, Intercept()
    server.key_holder = intercept
    with pytest.raises(AggregationAborted):
        server.result()
    server.key_holder = holder
    return intercept.request


@pytest.mark.parametrize("signature", [b"", bytes(64), b"\x01" * 63])
def test_dropped_or_forged_signatures_are_refused(setting, signature):
    refused(setting, with_contribution(setting.request, 2, signature=signature), DecryptionRefused,
            "not validly signed")


def test_a_duplicated_client_is_refused(setting):
    request = setting.request
    refused(setting, dataclasses.replace(request, contributions=request.contributions + request.contributions[:1]),
            DecryptionRefused, "twice")
    relabelled = with_contribution(request, 1, client=request.contributions[0].client)
    refused(setting, relabelled, DecryptionRefused, "twice")


_TAMPERINGS = st.one_of(
    st.tuples(st.just("cipher"), st.integers(0, 3), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("signature"), st.integers(0, 3), st.integers(0, 63), st.integers(1, 255)),
    st.tuples(st.just("client"), st.integers(0, 3), st.integers(0, 2**32 - 1), st.just(0)),
    st.tuples(st.just("round"), st.just(0), st.integers(-5, 5).filter(bool), st.just(0)),
    st.tuples(st.just("session"), st.just(0), st.integers(0, 15), st.integers(1, 255)),
    st.tuples(st.just("length"), st.just(0), st.integers(-19, 10_000).filter(bool), st.just(0)),
    st.tuples(st.just("key_id"), st.just(0), st.integers(0, 31), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 3), st.just(0), st.just(0)),
)


def _flip(data: bytes, position: int, mask: int) -> bytes:
    b = bytearray(data)
    b[position % len(b)] ^= mask
    return bytes(b)


def tamper(request: DecryptionRequest, how: tuple[str, int, int, int]) -> DecryptionRequest:
    what, index, a, b = how
    c = request.contributions[index]
    if what == "cipher":
        return with_contribution(request, index, ciphertexts=(_flip(c.ciphertexts[0], a, b),) + c.ciphertexts[1:])
    if what == "signature":
        return with_contribution(request, index, signature=_flip(c.signature, a, b))
    if what == "client":
        return with_contribution(request, index, client=a if a != c.client else a ^ 1)
    if what == "round":
        return dataclasses.replace(request, round=request.round + a)
    if what == "session":
        return dataclasses.replace(request, session=_flip(request.session, a, b))
    if what == "length":
        return dataclasses.replace(request, length=request.length + a)
    if what == "key_id":
        return dataclasses.replace(request, key_id=_flip(request.key_id, a, b))
    return with_contribution(request, index, ciphertexts=c.ciphertexts[:-1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=_TAMPERINGS)
def test_any_tampering_of_the_request_is_refused_and_nothing_is_decrypted(setting, how):
    with pytest.raises((DecryptionRefused, MessageError)):
        setting.holder.decrypt(tamper(setting.request, how))
    assert setting.counter.calls == 0 and setting.holder._last_released is None


def test_the_untampered_request_still_decrypts_after_refusals(setting):
    for how in (("cipher", 0, 100, 1), ("signature", 1, 0, 1), ("length", 0, 5000, 0), ("round", 0, -1, 0)):
        with pytest.raises((DecryptionRefused, MessageError)):
            setting.holder.decrypt(tamper(setting.request, how))
    release = setting.holder.decrypt(setting.request)
    assert release.weight == pytest.approx(len(CLIENTS), abs=1e-6)


# A malicious (enrolled) client: SEAL-valid ciphertexts that are not fresh encryptions -------------------------

def signed_update(aggregator: CKKSAggregator, ctx: RoundContext, client: int, blobs: tuple[bytes, ...]) -> bytes:
    """A CKKS_UPDATE of ``blobs`` with ``client``'s own valid signature."""
    aggregator.identities.enrol(ctx.clients)
    digest = contribution_digest(blobs)
    signature = aggregator.identities.signing_key(client).sign(contribution_payload(
        aggregator.public.key_id, ctx.session, ctx.round, client, ctx.dimension + 1, digest))
    body = BodyWriter().u32(len(blobs))
    for b in blobs:
        body.blob(b)
    return seal_envelope(ctx, client, MessageKind.CKKS_UPDATE, body.raw(signature).to_bytes())


def _honest_blobs(aggregator: CKKSAggregator) -> list[bytes]:
    return aggregator.public.encrypt(np.zeros(DIM + 1))


def _non_ntt(aggregator):
    cipher = aggregator.public.load(_honest_blobs(aggregator)[0])
    aggregator.public.evaluator.transform_from_ntt_inplace(cipher)
    return seal_io.dump(cipher)


def _size_3(aggregator):
    public = aggregator.public
    a, b = (public.load(x) for x in (public.encrypt(np.ones(4))[0], public.encrypt(np.ones(4))[0]))
    a.scale = b.scale = 2.0**20
    public.evaluator.multiply_inplace(a, b)
    a.scale = PARAMS.scale
    return seal_io.dump(a)


def _wrong_scale(aggregator):
    cipher = aggregator.public.load(_honest_blobs(aggregator)[0])
    cipher.scale = 2.0**40
    return seal_io.dump(cipher)


def _key_level(aggregator):
    n = PARAMS.poly_modulus_degree
    key_parms = aggregator.public.context.key_parms_id()
    return craft(aggregator, np.zeros(n, np.uint64), np.ones(n, np.uint64), parms_id=key_parms)


def _other_parameters(aggregator):
    from secagg.ckks.packing import PublicContext

    other = CKKSParams(coeff_bits=(50, 50), scale_bits=40, max_weight=10.0)
    return PublicContext(other, KeyHolder(other, {}).public_key).encrypt(np.zeros(DIM + 1))[0]


def _non_ntt_crafted(aggregator):
    n = PARAMS.poly_modulus_degree
    return craft(aggregator, np.zeros(n, np.uint64), np.ones(n, np.uint64), ntt=False)


BAD_CIPHERTEXTS = {
    "not NTT (transformed)": (_non_ntt, "NTT form"),
    "not NTT (crafted)": (_non_ntt_crafted, "NTT form"),
    "size 3": (_size_3, "size 3"),
    "wrong scale": (_wrong_scale, "scale"),
    "key-level parms id": (_key_level, "ciphertext"),
    "other parameters": (_other_parameters, "ciphertext"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CIPHERTEXTS))
def test_a_clients_malformed_ciphertext_is_refused_at_collect_and_the_round_completes(kind):
    make, match = BAD_CIPHERTEXTS[kind]
    aggregator = CKKSAggregator(PARAMS)
    ctx = RoundContext.new(1, CLIENTS, DIM)
    bad = signed_update(aggregator, ctx, 1, (make(aggregator),))
    server = aggregator.server_session(ctx)
    rng = np.random.default_rng(0)
    ups = {c: rng.uniform(-1, 1, DIM) for c in CLIENTS}
    for c in CLIENTS:
        if c == 1:
            with pytest.raises(MessageError, match=match) as info:
                server.collect(c, bad)
            assert type(info.value) is MessageError
        else:
            server.collect(c, aggregator.client_session(ctx, c, ups[c], 10.0).start())
    server.close_stage()
    result = server.result()
    assert result.contributors == (0, 2, 3)
    expected = np.mean([ups[c] for c in (0, 2, 3)], axis=0)
    assert np.abs(result.mean - expected).max() < 1e-6


def test_the_runtime_treats_a_malformed_ciphertext_as_this_clients_fault():
    from federation.runtime import CLIENT_FAULTS

    assert issubclass(MessageError, CLIENT_FAULTS)


@pytest.mark.parametrize("kind", sorted(BAD_CIPHERTEXTS))
def test_a_forwarded_malformed_contribution_spends_no_round_at_the_key_holder(setting, kind):
    """Signed by its client but malformed (an aggregator that forwards without checking): refused by the key
    holder before any decryption; the honest request of the same round still decrypts (check, then commit)."""
    make, match = BAD_CIPHERTEXTS[kind]
    aggregator, ctx = setting.aggregator, setting.ctx
    count = aggregator.public.ciphertexts_for(DIM + 1)
    blobs = (make(aggregator),) * count
    digest = contribution_digest(blobs)
    signature = aggregator.identities.signing_key(1).sign(contribution_payload(
        aggregator.public.key_id, ctx.session, ctx.round, 1, DIM + 1, digest))
    refused(setting, with_contribution(setting.request, 1, ciphertexts=blobs, signature=signature), MessageError,
            match)
    setting.holder.decrypt(setting.request)
    assert setting.holder._last_released == ctx.round


def test_a_signed_zero_constant_ciphertext_from_a_client_cannot_release_the_key(setting):
    """An enrolled client that sends (0, c) itself: the release would be dominated by c * s, so the range check
    refuses it (typed) and the round is spent: no second chance for this round."""
    aggregator, ctx = setting.aggregator, setting.ctx
    blobs = zero_and_constant(aggregator, 1 << 50)
    digest = contribution_digest(blobs)
    signature = aggregator.identities.signing_key(0).sign(contribution_payload(
        aggregator.public.key_id, ctx.session, ctx.round, 0, DIM + 1, digest))
    with pytest.raises(AggregateOutOfRange):
        setting.holder.decrypt(with_contribution(setting.request, 0, ciphertexts=blobs, signature=signature))
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        setting.holder.decrypt(setting.request)


def test_the_wire_carries_the_attacks_unchanged(setting):
    """What the tests above hand the key holder is what a remote key holder would decode from the wire."""
    tampered = with_contribution(setting.request, 0, ciphertexts=zero_and_constant(setting.aggregator, 7))
    assert decode_request(encode_request(tampered)) == tampered
