"""CKKS under an active adversary (issue 11, items 5 and 6): the sender lies, the key holder and the aggregator
refuse with a typed error, and nothing is decrypted.

A malicious aggregator asks the key holder to decrypt what it chose; a malicious client sends well-formed
compact ciphertexts that are not fresh encryptions, or malformed ones. Aggregates (SEAL ciphertexts) are
crafted here byte by byte (SEAL's own uncompressed serialization: header, parms id, NTT flag, size, degree,
moduli count, scale, correction factor, data), so that SEAL itself accepts them.
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
from secagg.ckks import compact, seal_io, sketch
from secagg.ckks.decryption_wire import decode_request, encode_request
from secagg.ckks.protocol import CKKSClient
from secagg.ckks.request import DecryptionRequest, SignedSketch
from secagg.ckks.signing import contribution_digest, contribution_payload, sketch_payload
from secagg.envelopes import seal_envelope
from secagg.errors import (AggregateOutOfRange, AggregationAborted, DecryptionRefused, MessageError,
                           ProtocolError, SecAggError)
from secagg.wire import SERVER_ID, BodyReader, BodyWriter, Envelope, MessageKind

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
    blobs: dict[int, tuple[bytes, ...]]  # each client's upload, which the key holder must never see
    states: dict[int, bytes]  # each client's session before any challenge (an honest client, answering anew)

    @property
    def holder(self):
        return self.aggregator.key_holder

    def answer(self, client: int, rho: bytes) -> SignedSketch:
        """What honest ``client`` answers to challenge ``rho``, whatever aggregate the aggregator hashed."""
        session = CKKSClient.resume(self.states[client], self.ctx, client,
                                    self.aggregator.identities.signing_key(client))
        reply = Envelope.from_bytes(session.handle(seal_envelope(self.ctx, SERVER_ID, MessageKind.CKKS_CHALLENGE, rho)))
        r = BodyReader(reply.body)
        assert r.raw(32) == rho
        values = struct.unpack(f">{r.u32()}Q", r.raw(8 * sketch.rows_for(self.aggregator.public.modulus)))
        honest = {c.client: c for c in self.request.contributions}[client]
        return dataclasses.replace(honest, sketch=values, sketch_signature=r.raw(64))

    def lie(self, aggregate: tuple[bytes, ...], clients: tuple[int, ...] | None = None) -> DecryptionRequest:
        """A deviating aggregator's request: its own ``aggregate``, the record of ``clients`` (default: all), and
        the sketches honest clients give for the challenge of exactly that aggregate and record."""
        request = self.request
        chosen = [c for c in request.contributions if clients is None or c.client in clients]
        rho = sketch.challenge(request.key_id, request.session, request.round, request.length,
                               contribution_digest(aggregate), ((c.client, c.digest) for c in chosen))
        return dataclasses.replace(request, aggregate=aggregate,
                                   contributions=tuple(self.answer(c.client, rho) for c in chosen))


def honest_round(aggregator: CKKSAggregator, ctx: RoundContext, bad: dict[int, bytes] | None = None,
                 drop: dict[int, int] | None = None):
    """Clients of ``ctx`` send honest updates (or ``bad[c]``) and answer the challenges (unless ``drop[c]`` is
    the stage they fall silent at); returns the server session once it finished, the uploads and the
    clients' states before any challenge."""
    rng = np.random.default_rng(ctx.round)
    server = aggregator.server_session(ctx)
    sessions = {c: aggregator.client_session(ctx, c, rng.uniform(-1, 1, DIM), 10.0) for c in ctx.clients}
    uploads = {c: (bad or {}).get(c, s.start()) for c, s in sessions.items()}
    states = {c: s.suspend() for c, s in sessions.items()}
    for c, m in uploads.items():
        server.collect(c, m)
    stage = 0
    while (replies := server.close_stage()):
        stage += 1
        for c, m in replies.items():
            if (drop or {}).get(c, 99) > stage:
                server.collect(c, sessions[c].handle(m))
    blobs = {c: _blobs_of(m) for c, m in uploads.items()}
    return server, blobs, states


def _blobs_of(message: bytes) -> tuple[bytes, ...]:
    r = BodyReader(Envelope.from_bytes(message).body)
    return tuple(r.blob() for _ in range(r.u32()))


@pytest.fixture
def setting() -> Setting:
    aggregator = CKKSAggregator(PARAMS)
    ctx = RoundContext.new(5, CLIENTS, DIM)
    server, blobs, states = honest_round(aggregator, ctx)
    intercept = Intercept()
    server.key_holder = intercept
    with pytest.raises(AggregationAborted):
        server.result()
    counter = CountingDecryptor(aggregator.key_holder._decryptor)
    aggregator.key_holder._decryptor = counter
    return Setting(aggregator, ctx, intercept.request, counter, blobs, states)


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


def dump_sum(setting: Setting, clients) -> tuple[bytes, ...]:
    """The honest sum of ``clients``' uploads, serialized (what the aggregator can compute)."""
    public = setting.aggregator.public
    total = public.load_upload(setting.blobs[clients[0]], DIM + 1)
    for c in clients[1:]:
        for acc, cipher in zip(total, public.load_upload(setting.blobs[c], DIM + 1)):
            public.add_inplace(acc, cipher)
    return tuple(seal_io.dump(c) for c in total)


NOT_THE_SUM = "not the sum"


# SEAL ciphertexts made by hand -------------------------------------------------------------------------------

def _seal_header(body: bytes, minor: int) -> bytes:
    return struct.pack("<HBBBBHQ", 0xA15E, 16, 4, minor, 0, 0, 16 + len(body)) + body  # compr_mode none


def craft(aggregator: CKKSAggregator, c0: np.ndarray, c1: np.ndarray, *, parms_id=None, ntt=False,
          scale: float = 1.0, size: int = 2) -> bytes:
    """A serialized ciphertext ``(c0, c1)`` (coefficient-form residues mod q0) that SEAL loads as valid."""
    public = aggregator.public
    minor = seal_io.dump(seal.Plaintext())[4]
    data = np.concatenate([c0, c1] + [c1] * (size - 2)).astype("<u8")
    dyn = _seal_header(struct.pack("<Q", data.size) + data.tobytes(), minor)
    body = struct.pack("<4Q", *(parms_id or public.context.first_parms_id())) + bytes([ntt])
    body += struct.pack("<QQQdQ", size, PARAMS.poly_modulus_degree, 1, scale, 1) + dyn
    return _seal_header(body, minor)


def zero_and_constant(aggregator: CKKSAggregator, constant: int) -> tuple[bytes, ...]:
    """``(0, constant)``: decrypts to ``constant * s``, the secret key itself scaled (the issue's attack)."""
    n, count = PARAMS.poly_modulus_degree, aggregator.public.ciphertexts_for(DIM + 1)
    return (craft(aggregator, np.zeros(n, np.uint64), np.full(n, constant, np.uint64)),) * count


def compact_zero_and_constant(aggregator: CKKSAggregator, constant: int) -> tuple[bytes, ...]:
    """The same as a client's compact upload (``constant`` survives the rounding when it is a multiple of
    2^c1_drop)."""
    n, count = PARAMS.poly_modulus_degree, aggregator.public.ciphertexts_for(DIM + 1)
    zeros, constants = np.zeros((count, n), np.uint64), np.full((count, n), constant, np.uint64)
    return tuple(compact.compress(aggregator.public.layout, zeros, constants, DIM + 1)[0])


def test_crafting_is_faithful(setting):
    """The crafted (0, c) really is SEAL-valid and decrypts to c * s: the attack would work on a naive holder;
    the compact one stands for exactly (0, c)."""
    public = setting.aggregator.public
    blob = zero_and_constant(setting.aggregator, 1 << 20)[0]
    cipher, ntt, plain = public.load_aggregate(blob), seal.Ciphertext(public.context), seal.Plaintext()
    public.evaluator.transform_to_ntt(cipher, ntt)
    setting.counter.inner.decrypt(ntt, plain)
    assert np.abs(public.decode([plain], 100)).max() > 0
    uploaded = public.load_upload(compact_zero_and_constant(setting.aggregator, 1 << 50), DIM + 1)
    assert sketch.coefficients(uploaded)[:PARAMS.poly_modulus_degree].max() == 0
    assert set(sketch.coefficients(uploaded)[PARAMS.poly_modulus_degree:].tolist()) == {1 << 50}


# 5. A malicious aggregator: chosen ciphertexts, substitutes, differences, replays, dropped signatures -------

def test_a_crafted_zero_constant_aggregate_is_refused(setting):
    crafted = zero_and_constant(setting.aggregator, 1 << 40)
    # as the aggregate of the honest record: the sketches were signed for another challenge
    refused(setting, dataclasses.replace(setting.request, aggregate=crafted), DecryptionRefused, "not validly signed")
    # with the honest clients' answers to the challenge of exactly this aggregate: the sketches do not add up
    refused(setting, setting.lie(crafted), DecryptionRefused, NOT_THE_SUM)
    # ... nor with a contributor of its own (not enrolled)
    extra = SignedSketch(99, bytes(32), bytes(64), (0,) * len(setting.request.contributions[0].sketch), bytes(64))
    refused(setting, dataclasses.replace(setting.request, aggregate=crafted,
                                         contributions=(extra,) + setting.request.contributions),
            DecryptionRefused, "not enrolled")


def test_format_1_and_2_requests_are_refused(setting):
    """The old requests (a summed ciphertext and a record of digests; every client's ciphertexts) cannot even
    be parsed any more."""
    old = BodyWriter().u32(DIM + 1).u32(1).blob(zero_and_constant(setting.aggregator, 1 << 40)[0])
    old.u32(len(setting.request.contributions))
    for c in setting.request.contributions:
        old.u32(c.client).raw(c.digest).raw(c.update_signature)
    v2 = BodyWriter().u8(2).raw(setting.request.key_id).u32(DIM + 1).u32(len(setting.blobs))
    for c, blobs in setting.blobs.items():
        v2.u32(c).u32(len(blobs))
        for b in blobs:
            v2.blob(b)
        v2.raw(bytes(64))
    for body in (old, v2):
        message = Envelope(MessageKind.CKKS_DECRYPT_REQUEST, setting.ctx.session, setting.ctx.round, SERVER_ID,
                           body.to_bytes()).to_bytes()
        with pytest.raises(MessageError, match="format"):
            decode_request(message)
    assert setting.counter.calls == 0


def test_one_clients_ciphertext_as_the_sum_is_refused(setting):
    request, first = setting.request, setting.request.contributions[0]
    one = dump_sum(setting, (0,))  # client 0's upload, rebuilt as the aggregator holds it
    refused(setting, setting.lie(one), DecryptionRefused, NOT_THE_SUM)
    refused(setting, setting.lie(one, clients=(0,)), DecryptionRefused, "min_clients")
    refused(setting, setting.lie(setting.blobs[0]), MessageError, "ciphertext")  # a compact blob is no aggregate
    lone = setting.lie(one, clients=(0,))
    refused(setting, dataclasses.replace(lone, contributions=lone.contributions * 2), DecryptionRefused, "twice")
    refused(setting, dataclasses.replace(request, contributions=(first, first)), DecryptionRefused, "twice")


def test_sum_minus_client_0_is_refused(setting):
    rest = dump_sum(setting, CLIENTS[1:])
    refused(setting, setting.lie(rest), DecryptionRefused, NOT_THE_SUM)  # client 0 still in the record
    refused(setting, dataclasses.replace(setting.request, aggregate=rest), DecryptionRefused, "not validly signed")
    # the honest aggregate, then the same round without client 0: a second release of one round is refused
    setting.holder.decrypt(setting.request)
    calls = setting.counter.calls
    without_0 = setting.lie(rest, clients=CLIENTS[1:])  # an honest request of its own: the round is spent
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        setting.holder.decrypt(without_0)
    with pytest.raises(DecryptionRefused, match="already decrypted"):  # ... whatever session it claims
        setting.holder.decrypt(dataclasses.replace(without_0, session=bytes(16)))
    assert setting.counter.calls == calls


def test_an_aggregate_differing_from_the_sum_in_one_coefficient_is_refused(setting):
    public = setting.aggregator.public
    cipher = public.load_aggregate(setting.request.aggregate[0])
    coeffs = sketch.coefficients([cipher])
    n = PARAMS.poly_modulus_degree
    for position in (0, n + 17):  # one coefficient of c0, then of c1
        changed = coeffs.copy()
        changed[position] = (int(changed[position]) + 1) % public.modulus
        aggregate = (craft(setting.aggregator, changed[:n], changed[n:]),) + setting.request.aggregate[1:]
        refused(setting, setting.lie(aggregate), DecryptionRefused, NOT_THE_SUM)
    # the faithful re-encoding of the same coefficients passes: only the one coefficient was wrong
    same = (craft(setting.aggregator, coeffs[:n], coeffs[n:]),) + setting.request.aggregate[1:]
    assert setting.holder.decrypt(setting.lie(same)).weight == pytest.approx(len(CLIENTS), abs=1e-4)


def test_a_record_that_omits_a_contributor_is_refused(setting):
    """The honest sum of all four, presented as the sum of three: the omitted sketch is missing from the total."""
    refused(setting, setting.lie(setting.request.aggregate, clients=CLIENTS[:-1]), DecryptionRefused, NOT_THE_SUM)
    refused(setting, dataclasses.replace(setting.request, contributions=setting.request.contributions[:-1]),
            DecryptionRefused, "not validly signed")  # the sketches name the four-client challenge


def test_a_forged_sketch_is_refused(setting):
    c = setting.request.contributions[1]
    q = setting.aggregator.public.modulus
    shifted = ((c.sketch[0] + 1) % q,) + c.sketch[1:]
    refused(setting, with_contribution(setting.request, 1, sketch=shifted), DecryptionRefused, "not validly signed")
    # two sketches shifted so that their sum is unchanged: each signature still binds its own values
    d = setting.request.contributions[2]
    balanced = with_contribution(with_contribution(setting.request, 1, sketch=shifted), 2,
                                 sketch=((d.sketch[0] - 1) % q,) + d.sketch[1:])
    refused(setting, balanced, DecryptionRefused, "not validly signed")
    refused(setting, with_contribution(setting.request, 1, sketch=(q,) + c.sketch[1:]), MessageError, "residues")
    refused(setting, with_contribution(setting.request, 1, sketch=c.sketch[:-1]), MessageError, "residues")


def test_a_false_sketch_signed_by_its_client_is_refused(setting):
    """A client that signs a sketch that is not its upload's: the sum does not match (the aggregator finds the
    liar before asking, see test_a_false_sketch_is_found_and_its_client_excluded)."""
    request, ctx, agg = setting.request, setting.ctx, setting.aggregator
    c = request.contributions[1]
    false = ((c.sketch[0] + 1) % agg.public.modulus,) + c.sketch[1:]
    rho = sketch.challenge(request.key_id, request.session, request.round, request.length,
                           contribution_digest(request.aggregate), ((x.client, x.digest) for x in request.contributions))
    signature = agg.identities.signing_key(c.client).sign(sketch_payload(
        agg.public.key_id, ctx.session, ctx.round, c.client, DIM + 1, c.digest, rho, false))
    refused(setting, with_contribution(request, 1, sketch=false, sketch_signature=signature), DecryptionRefused,
            NOT_THE_SUM)


def test_a_sketch_signed_for_another_challenge_is_refused(setting):
    other = setting.lie(dump_sum(setting, CLIENTS[:-1]), clients=CLIENTS[:-1])  # client 2 answered this one too
    moved = with_contribution(setting.request, 2, sketch=other.contributions[2].sketch,
                              sketch_signature=other.contributions[2].sketch_signature)
    refused(setting, moved, DecryptionRefused, "not validly signed")


def test_replays_are_refused(setting):
    aggregator, request = setting.aggregator, setting.request
    later = intercepted_later_round(aggregator, setting.ctx.round + 1)
    # a contribution of this round replayed into the next one
    replayed = with_contribution(later, 0, digest=request.contributions[0].digest,
                                 update_signature=request.contributions[0].update_signature,
                                 sketch=request.contributions[0].sketch,
                                 sketch_signature=request.contributions[0].sketch_signature)
    refused(setting, replayed, DecryptionRefused, "not validly signed")
    refused(setting, dataclasses.replace(later, aggregate=request.aggregate), DecryptionRefused, "not validly signed")
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
    server, _, _ = honest_round(aggregator, ctx)
    holder, intercept = aggregator.key_holder, Intercept()
    server.key_holder = intercept
    with pytest.raises(AggregationAborted):
        server.result()
    server.key_holder = holder
    return intercept.request


@pytest.mark.parametrize("field", ["update_signature", "sketch_signature"])
@pytest.mark.parametrize("signature", [b"", bytes(64), b"\x01" * 63])
def test_dropped_or_forged_signatures_are_refused(setting, field, signature):
    refused(setting, with_contribution(setting.request, 2, **{field: signature}), DecryptionRefused,
            "not validly signed")


def test_a_duplicated_client_is_refused(setting):
    request = setting.request
    refused(setting, dataclasses.replace(request, contributions=request.contributions + request.contributions[:1]),
            DecryptionRefused, "twice")
    relabelled = with_contribution(request, 1, client=request.contributions[0].client)
    refused(setting, relabelled, DecryptionRefused, "twice")


def test_the_key_holder_never_receives_a_clients_ciphertext(setting):
    """Neither the request object nor its wire form carries any piece of any client's upload; the aggregate is
    the only ciphertext, about two uploads' size whatever the number of clients (its residues are whole, an
    upload's rounded)."""
    encoded = encode_request(setting.request)
    flat = [b for blobs in setting.blobs.values() for b in blobs]
    for blob in flat:
        for start in range(64, len(blob) - 64, max(1, len(blob) // 8)):  # any 64-byte window of the body
            assert blob[start:start + 64] not in encoded
    assert not set(flat) & set(setting.request.aggregate)
    for c in setting.request.contributions:  # per client: a digest, two signatures and a few residues, no more
        assert (len(c.digest), len(c.update_signature), len(c.sketch_signature)) == (32, 64, 64)
        assert all(isinstance(v, int) for v in c.sketch) and len(c.sketch) <= 8
    one_upload = sum(len(b) for b in setting.blobs[0])
    assert len(encoded) < 2 * one_upload + 1000


_TAMPERINGS = st.one_of(
    st.tuples(st.just("aggregate"), st.just(0), st.integers(0, 10**6), st.integers(1, 255)),
    st.tuples(st.just("update_signature"), st.integers(0, 3), st.integers(0, 63), st.integers(1, 255)),
    st.tuples(st.just("sketch_signature"), st.integers(0, 3), st.integers(0, 63), st.integers(1, 255)),
    st.tuples(st.just("digest"), st.integers(0, 3), st.integers(0, 31), st.integers(1, 255)),
    st.tuples(st.just("sketch"), st.integers(0, 3), st.integers(0, 2), st.integers(1, 2**40)),
    st.tuples(st.just("client"), st.integers(0, 3), st.integers(0, 2**32 - 1), st.just(0)),
    st.tuples(st.just("round"), st.just(0), st.integers(-5, 5).filter(bool), st.just(0)),
    st.tuples(st.just("session"), st.just(0), st.integers(0, 15), st.integers(1, 255)),
    st.tuples(st.just("length"), st.just(0), st.integers(-19, 10_000).filter(bool), st.just(0)),
    st.tuples(st.just("key_id"), st.just(0), st.integers(0, 31), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("drop"), st.integers(0, 3), st.just(0), st.just(0)),
)


def _flip(data: bytes, position: int, mask: int) -> bytes:
    b = bytearray(data)
    b[position % len(b)] ^= mask
    return bytes(b)


def tamper(request: DecryptionRequest, how: tuple[str, int, int, int], modulus: int) -> DecryptionRequest:
    what, index, a, b = how
    c = request.contributions[index]
    if what == "aggregate":
        return dataclasses.replace(request, aggregate=(_flip(request.aggregate[0], a, b),) + request.aggregate[1:])
    if what in ("update_signature", "sketch_signature", "digest"):
        return with_contribution(request, index, **{what: _flip(getattr(c, what), a, b)})
    if what == "sketch":
        values = list(c.sketch)
        values[a % len(values)] = (values[a % len(values)] + b) % modulus
        return with_contribution(request, index, sketch=tuple(values))
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
    if what == "drop":
        return dataclasses.replace(request, contributions=request.contributions[:index] + request.contributions[index + 1:])
    return dataclasses.replace(request, aggregate=request.aggregate[:-1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=_TAMPERINGS)
def test_any_tampering_of_the_request_is_refused_and_nothing_is_decrypted(setting, how):
    with pytest.raises((DecryptionRefused, MessageError)):
        setting.holder.decrypt(tamper(setting.request, how, setting.aggregator.public.modulus))
    assert setting.counter.calls == 0 and setting.holder._last_released is None


def test_the_untampered_request_still_decrypts_after_refusals(setting):
    q = setting.aggregator.public.modulus
    for how in (("aggregate", 0, 100, 1), ("sketch_signature", 1, 0, 1), ("length", 0, 5000, 0), ("round", 0, -1, 0),
                ("sketch", 2, 0, 5)):
        with pytest.raises((DecryptionRefused, MessageError)):
            setting.holder.decrypt(tamper(setting.request, how, q))
    release = setting.holder.decrypt(setting.request)
    assert release.weight == pytest.approx(len(CLIENTS), abs=1e-4)


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


def _c0_padding_byte(aggregator: CKKSAggregator) -> int:
    """The index of the byte that ends c0 in a one-ciphertext upload of DIM + 1 reals (it has padding bits)."""
    layout = aggregator.public.layout
    assert 8 * compact.packed_size(DIM + 1, layout.c0_bits) > (DIM + 1) * layout.c0_bits
    return compact.packed_size(DIM + 1, layout.c0_bits)


def _with_byte(blob: bytes, index: int, value: int) -> bytes:
    return blob[:index] + bytes([value]) + blob[index + 1:]


def _seal_serialization(aggregator):
    public = aggregator.public
    return (seal_io.dump(public.load_upload(_honest_blobs(aggregator), DIM + 1)[0]),)


def _other_parameters(aggregator):
    from secagg.ckks.packing import PublicContext

    other = CKKSParams(max_clients=1000, max_weight=10.0)
    return tuple(PublicContext(other, KeyHolder(other, {}).public_key).encrypt(np.zeros(DIM + 1)))


def _whole_c0(aggregator):
    """The last ciphertext with all N coefficients of c0 (it must stop after the last real)."""
    public, n = aggregator.public, PARAMS.poly_modulus_degree
    return tuple(public.encrypt(np.zeros(n)))


BAD_UPLOADS = {
    "SEAL's own serialization": (_seal_serialization, "bytes"),
    "truncated": (lambda a: (_honest_blobs(a)[0][:-1],), "bytes"),
    "one byte more": (lambda a: (_honest_blobs(a)[0] + b"\0",), "bytes"),
    "empty": (lambda a: (b"",), "bytes"),
    "another format": (lambda a: (_with_byte(_honest_blobs(a)[0], 0, 0xC2),), "format"),
    "non-zero padding bits": (lambda a: (_with_byte(_honest_blobs(a)[0], _c0_padding_byte(a),
                                                    _honest_blobs(a)[0][_c0_padding_byte(a)] | 0x80),), "padding"),
    "c0 not cut after the last real": (_whole_c0, "bytes"),
    "two ciphertexts": (lambda a: tuple(_honest_blobs(a)) * 2, "count"),
    "other parameters": (_other_parameters, "bytes"),
}


@pytest.mark.parametrize("kind", sorted(BAD_UPLOADS))
def test_a_clients_malformed_ciphertext_is_refused_at_collect_and_the_round_completes(kind):
    make, match = BAD_UPLOADS[kind]
    aggregator = CKKSAggregator(PARAMS)
    ctx = RoundContext.new(1, CLIENTS, DIM)
    bad = signed_update(aggregator, ctx, 1, make(aggregator))
    server = aggregator.server_session(ctx)
    rng = np.random.default_rng(0)
    ups = {c: rng.uniform(-1, 1, DIM) for c in CLIENTS}
    sessions = {c: aggregator.client_session(ctx, c, ups[c], 10.0) for c in CLIENTS}
    for c in CLIENTS:
        if c == 1:
            with pytest.raises(MessageError, match=match) as info:
                server.collect(c, bad)
            assert type(info.value) is MessageError
        else:
            server.collect(c, sessions[c].start())
    for c, m in server.close_stage().items():
        server.collect(c, sessions[c].handle(m))
    assert server.close_stage() == {}
    result = server.result()
    assert result.contributors == (0, 2, 3)
    expected = np.mean([ups[c] for c in (0, 2, 3)], axis=0)
    assert np.abs(result.mean - expected).max() < 6 * PARAMS.masking_error_std


def _out_of_range(aggregator):
    n = PARAMS.poly_modulus_degree
    c0 = np.zeros(n, np.uint64)
    c0[3] = aggregator.public.modulus
    return craft(aggregator, c0, np.ones(n, np.uint64))


def _ones(aggregator, **kwargs):
    n = PARAMS.poly_modulus_degree
    return craft(aggregator, np.zeros(n, np.uint64), np.ones(n, np.uint64), **kwargs)


BAD_AGGREGATES = {
    "NTT form": (lambda a: _ones(a, ntt=True), "NTT form"),
    "size 3": (lambda a: _ones(a, size=3), "size 3"),
    "wrong scale": (lambda a: _ones(a, scale=2.0**40), "scale"),
    "another parms id": (lambda a: _ones(a, parms_id=[1, 2, 3, 4]), "ciphertext"),
    "a residue out of range": (_out_of_range, "ciphertext"),
    "a compact upload": (lambda a: _honest_blobs(a)[0], "ciphertext"),
}


def test_an_upload_refused_at_its_last_ciphertext_leaves_the_running_sum_as_it_was():
    """A bad last ciphertext refuses the whole upload before any of it is added: the sum is the others'."""
    aggregator = CKKSAggregator(PARAMS)
    dim = PARAMS.reals_per_ciphertext + 10  # two ciphertexts per upload
    ctx = RoundContext.new(1, CLIENTS, dim)
    rng = np.random.default_rng(1)
    ups = {c: rng.uniform(-1, 1, dim) for c in CLIENTS}
    honest = aggregator.public.encrypt(np.append(ups[1], 1.0))
    bad = signed_update(aggregator, ctx, 1, (honest[0], b"junk"))
    sessions = {c: aggregator.client_session(ctx, c, ups[c], 10.0) for c in CLIENTS}
    server = aggregator.server_session(ctx)
    for c in CLIENTS:
        if c == 1:
            with pytest.raises(MessageError):
                server.collect(c, bad)
        else:
            server.collect(c, sessions[c].start())
    for c, m in server.close_stage().items():
        server.collect(c, sessions[c].handle(m))
    assert server.close_stage() == {}
    result = server.result()
    assert result.contributors == (0, 2, 3)
    assert np.abs(result.mean - np.mean([ups[c] for c in (0, 2, 3)], axis=0)).max() < 6 * PARAMS.masking_error_std


def test_the_runtime_treats_a_malformed_ciphertext_as_this_clients_fault():
    from federation.runtime import CLIENT_FAULTS

    assert issubclass(MessageError, CLIENT_FAULTS)


@pytest.mark.parametrize("kind", sorted(BAD_AGGREGATES))
def test_a_malformed_aggregate_spends_no_round_at_the_key_holder(setting, kind):
    """A malformed aggregate with every signature valid for it (honest clients answered its challenge): refused
    by the key holder before any decryption; the honest request of the same round still decrypts."""
    make, match = BAD_AGGREGATES[kind]
    aggregator = setting.aggregator
    count = aggregator.public.ciphertexts_for(DIM + 1)
    refused(setting, setting.lie((make(aggregator),) * count), MessageError, match)
    setting.holder.decrypt(setting.request)
    assert setting.holder._last_released == setting.ctx.round


def test_a_signed_zero_constant_ciphertext_from_a_client_cannot_release_the_key(setting):
    """An enrolled client that uploads (0, c) itself and sketches it truthfully: the aggregate is the true sum,
    the release would be dominated by c * s, so the range check refuses it (typed) and the round is spent."""
    aggregator, ctx, request = setting.aggregator, setting.ctx, setting.request
    public = aggregator.public
    crafted = compact_zero_and_constant(aggregator, 1 << 50)
    setting.blobs[0] = crafted
    digest = contribution_digest(crafted)
    head = (public.key_id, ctx.session, ctx.round, 0, DIM + 1, digest)
    key = aggregator.identities.signing_key(0)
    aggregate = dump_sum(setting, CLIENTS)
    record = [(0, digest)] + [(c.client, c.digest) for c in request.contributions[1:]]
    rho = sketch.challenge(public.key_id, ctx.session, ctx.round, DIM + 1, contribution_digest(aggregate), record)
    values = sketch.sketch(rho, sketch.coefficients(public.load_upload(crafted, DIM + 1)), public.modulus)
    own = SignedSketch(0, digest, key.sign(contribution_payload(*head)), values, key.sign(sketch_payload(*head, rho, values)))
    others = tuple(setting.answer(c.client, rho) for c in request.contributions[1:])
    with pytest.raises(AggregateOutOfRange):
        setting.holder.decrypt(dataclasses.replace(request, aggregate=aggregate, contributions=(own,) + others))
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        setting.holder.decrypt(request)


def test_the_wire_carries_the_attacks_unchanged(setting):
    """What the tests above hand the key holder is what a remote key holder would decode from the wire."""
    tampered = setting.lie(zero_and_constant(setting.aggregator, 7))
    assert decode_request(encode_request(tampered)) == tampered


# The aggregator's side of the challenge: false sketches, dropouts, a client's answers ----------------------

def test_a_false_sketch_is_found_and_its_client_excluded():
    """A client whose sketch is not its upload's is found by the aggregator (the sum does not match, then each
    sketch is checked) and left out; the others are challenged again and the round completes without it."""
    aggregator = CKKSAggregator(PARAMS)
    ctx = RoundContext.new(1, CLIENTS, DIM)
    rng = np.random.default_rng(1)
    ups = {c: rng.uniform(-1, 1, DIM) for c in CLIENTS}
    sessions = {c: aggregator.client_session(ctx, c, ups[c], 10.0) for c in CLIENTS}
    liar = sessions[2]
    honest_coefficients = liar._coefficients

    def other_coefficients():
        coefficients = honest_coefficients()
        coefficients[5] ^= np.uint64(1)  # it sketches something other than what it sent
        return coefficients

    liar._coefficients = other_coefficients
    server = aggregator.server_session(ctx)
    for c in CLIENTS:
        server.collect(c, sessions[c].start())
    stages = 0
    while (replies := server.close_stage()):
        stages += 1
        for c, m in replies.items():
            server.collect(c, sessions[c].handle(m))
    result = server.result()
    assert stages == 2 and result.details["challenges"] == 2
    assert result.contributors == (0, 1, 3)
    assert np.abs(result.mean - np.mean([ups[c] for c in (0, 1, 3)], axis=0)).max() < 6 * PARAMS.masking_error_std


def test_a_dropout_at_the_challenge_is_re_challenged_once_then_the_round_aborts():
    aggregator = CKKSAggregator(PARAMS)
    server, _, _ = honest_round(aggregator, RoundContext.new(1, CLIENTS, DIM), drop={3: 1})
    result = server.result()
    assert result.contributors == (0, 1, 2) and result.details["challenges"] == 2
    server, _, _ = honest_round(aggregator, RoundContext.new(2, CLIENTS, DIM), drop={3: 1, 1: 2})
    with pytest.raises(AggregationAborted, match=r"clients \[1\] did not answer the last challenge"):
        server.result()
    server, _, _ = honest_round(aggregator, RoundContext.new(3, CLIENTS, DIM, min_clients=4), drop={3: 1})
    with pytest.raises(AggregationAborted, match="min_clients=4"):
        server.result()


def test_a_client_answers_two_challenges_at_most_and_the_same_one_alike(setting):
    ctx = setting.ctx
    client = CKKSClient.resume(setting.states[1], ctx, 1, setting.aggregator.identities.signing_key(1))
    challenges = [seal_envelope(ctx, SERVER_ID, MessageKind.CKKS_CHALLENGE, bytes([i]) * 32) for i in range(3)]
    first = client.handle(challenges[0])
    assert client.handle(challenges[0]) == first
    client.handle(challenges[1])
    with pytest.raises(ProtocolError, match="already answered 2"):
        client.handle(challenges[2])
    assert CKKSClient.resume(client.suspend(), ctx, 1, setting.aggregator.identities.signing_key(1)).handle(
        challenges[0]) == first
    with pytest.raises(MessageError):
        client.handle(seal_envelope(ctx, SERVER_ID, MessageKind.CKKS_CHALLENGE, bytes(31)))
    with pytest.raises(ProtocolError):  # a challenge must come from the aggregator
        client.handle(seal_envelope(ctx, 2, MessageKind.CKKS_CHALLENGE, bytes(32)))


def test_the_aggregator_refuses_a_sketch_for_another_challenge_or_unchallenged(setting):
    aggregator = CKKSAggregator(PARAMS)
    ctx = RoundContext.new(1, CLIENTS, DIM)
    sessions = {c: aggregator.client_session(ctx, c, np.zeros(DIM), 1.0) for c in CLIENTS}
    server = aggregator.server_session(ctx)
    for c in CLIENTS[:3]:
        server.collect(c, sessions[c].start())
    replies = server.close_stage()
    assert sorted(replies) == [0, 1, 2]
    stale = sessions[0].handle(seal_envelope(ctx, SERVER_ID, MessageKind.CKKS_CHALLENGE, bytes(32)))
    with pytest.raises(ProtocolError, match="another challenge"):
        server.collect(0, stale)
    with pytest.raises(ProtocolError, match="not challenged"):
        server.collect(3, sessions[3].handle(replies[0]))
    answer = sessions[1].handle(replies[1])
    with pytest.raises(ProtocolError, match="claims sender"):
        server.collect(2, answer)
    server.collect(1, answer)
    with pytest.raises(ProtocolError, match="duplicate"):
        server.collect(1, answer)
