"""CKKS aggregation: error bounds, separated key roles, the key holder's policy, tampering."""

import dataclasses
import itertools

import numpy as np
import pytest
import tenseal.sealapi as seal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.aggregation import RoundContext
from secagg.ckks import CKKSAggregator, CKKSParams, KeyHolder
from secagg.ckks.packing import PublicContext
from secagg.errors import (
    AggregationAborted,
    AuthenticationError,
    ConfigurationError,
    DecryptionRefused,
    MessageError,
    ProtocolError,
    SecAggError,
    UpdateRejected,
)
from secagg.ckks.protocol import CKKSClient
from secagg.envelopes import seal_envelope
from secagg.wire import SERVER_ID, Envelope, MessageKind

from tests.secagg.driver import run_round


@pytest.fixture(scope="module")
def aggregator():
    return CKKSAggregator(CKKSParams(max_weight=10.0))


class Capture:
    """Wraps the key holder to keep the last request and release."""

    def __init__(self, aggregator):
        self.inner = aggregator.key_holder
        aggregator.key_holder = self
        self.aggregator = aggregator

    def decrypt(self, request):
        self.request = request
        self.release = self.inner.decrypt(request)
        return self.release

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.aggregator.key_holder = self.inner


def updates(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    return {c: rng.uniform(-1, 1, dim).astype(np.float32) for c in range(n)}


_ROUNDS = itertools.count(1)


def next_ctx(ups, min_clients=1):
    """A context for the module's shared key holder, which releases each round index once, in order."""
    return RoundContext.new(next(_ROUNDS), tuple(sorted(ups)), len(next(iter(ups.values()))), min_clients)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.integers(2, 100), st.integers(1, 9000), st.integers(0, 2**16))
def test_aggregate_error_is_within_maskings(aggregator, n, dim, seed):
    """Per client, CKKS's error (encryption noise and the compression of uploads) is at most masking's
    quantization error at the same precision; the sum stays within 6 of its standard deviations."""
    params = aggregator.params
    assert params.error_std <= params.masking_error_std
    ups = updates(n, dim, seed)
    weights = {c: 10.0 for c in ups}  # alpha = 1: the released sum is the plain sum
    with Capture(aggregator) as cap:
        _, result = run_round(aggregator, ups, weights=weights, ctx=next_ctx(ups))
    exact = np.sum(np.stack(list(ups.values())).astype(np.float64), axis=0)
    bound = 6 * np.sqrt(n) * params.masking_error_std + 12 * 2.0**-params.flood_bits
    assert np.abs(cap.release.weighted_sum - exact).max() <= bound
    assert abs(cap.release.weight - n) <= bound
    assert np.abs(result.mean - exact / n).max() <= 2 * bound / n + 1e-7  # and float32's rounding of the mean
    assert result.total_weight == pytest.approx(10.0 * n)


def test_the_sum_is_at_least_as_precise_as_a_masked_one():
    """The same updates through masking (20-bit fixed point, stochastic rounding) and CKKS, in one run."""
    from secagg.masking import MaskingAggregator, MaskingConfig

    ups = updates(10, 20_000, seed=7)
    exact = np.mean(np.stack(list(ups.values())).astype(np.float64), axis=0)
    errors = {}
    aggregators = {"mask": MaskingAggregator(MaskingConfig()), "ckks": CKKSAggregator(CKKSParams(max_clients=10))}
    for name, agg in aggregators.items():
        _, result = run_round(agg, ups)
        errors[name] = np.std(result.mean.astype(np.float64) - exact)
    assert errors["ckks"] < errors["mask"]


def test_weighted_mean(aggregator):
    ups = updates(4, 50)
    weights = {0: 1.0, 1: 2.0, 2: 3.0, 3: 10.0}
    _, result = run_round(aggregator, ups, weights=weights, ctx=next_ctx(ups))
    expected = np.average(np.stack(list(ups.values())), axis=0, weights=list(weights.values()))
    assert np.abs(result.mean - expected).max() < 1e-5
    assert result.total_weight == pytest.approx(16.0, abs=1e-4)  # weight fractions carry the error too


def test_release_is_flooded_and_rounded(aggregator):
    ups = {c: np.zeros(3000, np.float32) for c in range(3)}
    with Capture(aggregator) as cap:
        run_round(aggregator, ups, weights={c: 10.0 for c in ups}, ctx=next_ctx(ups))
    released = cap.release.weighted_sum
    grid = 2.0**aggregator.params.release_bits
    np.testing.assert_array_equal(released * grid, np.round(released * grid))  # on the release grid
    expected = np.sqrt(3 * aggregator.params.error_std**2 + 2.0 ** (-2 * aggregator.params.flood_bits))
    assert 0.9 * expected < released.std() < 1.1 * expected  # CKKS's error as sized, and no more
    flooded = aggregator.key_holder._flood_and_round(np.zeros(20_000))
    assert 0.9 * 2.0**-24 < flooded.std() < 1.1 * 2.0**-24  # the flooding noise is there, at its sigma


def test_aggregator_holds_no_secret_key_and_cannot_decrypt(aggregator):
    ctx = RoundContext.new(1, (0, 1), 10)
    server = aggregator.server_session(ctx)
    public = server.public
    assert not any(isinstance(v, seal.SecretKey) for v in vars(public).values())
    assert not any(isinstance(v, (seal.SecretKey, seal.Decryptor)) for v in vars(server).values()
                   if not isinstance(v, KeyHolder))
    # an aggregator that makes up its own secret key decrypts noise, not the update
    secret = np.linspace(-1, 1, 1000)
    cipher = public.load_upload(public.encrypt(secret), 1000)[0]
    rogue = seal.Decryptor(public.context, seal.KeyGenerator(public.context).secret_key())
    plain, ntt = seal.Plaintext(), seal.Ciphertext(public.context)
    public.evaluator.transform_to_ntt(cipher, ntt)
    rogue.decrypt(ntt, plain)
    guess = public.decode([plain], 1000)  # uniform residues, spread over +-q0 / (2 scale)
    assert np.median(np.abs(guess - secret)) > 0.1 * public.modulus / public.params.scale


def test_public_context_does_not_carry_the_secret_key():
    holder = KeyHolder(CKKSParams(), {})
    from secagg.ckks import seal_io

    secret_bytes = seal_io.dump(holder._KeyHolder__secret_key)
    assert secret_bytes[64:128] not in holder.public_key


class Intercept:
    """Stands in for the key holder: keeps the request undecrypted (the round aborts)."""

    def decrypt(self, request):
        self.request = request
        raise DecryptionRefused("intercepted for the test")


def fresh_request(aggregator, n=3, dim=20):
    """A valid, signed request that the real key holder has never seen."""
    holder, aggregator.key_holder = aggregator.key_holder, Intercept()
    try:
        ups = updates(n, dim)
        with pytest.raises(AggregationAborted):
            run_round(aggregator, ups, ctx=next_ctx(ups))
        return aggregator.key_holder.request
    finally:
        aggregator.key_holder = holder


def test_a_valid_request_is_decrypted_once(aggregator):
    request = fresh_request(aggregator)
    release = aggregator.key_holder.decrypt(request)
    assert release.weighted_sum.shape == (20,)
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        aggregator.key_holder.decrypt(request)


def _with_aggregate(r, aggregate):
    return dataclasses.replace(r, aggregate=aggregate)


@pytest.mark.parametrize("edit, match", [
    (lambda r: dataclasses.replace(r, contributions=r.contributions[:1]), "min_clients"),
    (lambda r: dataclasses.replace(r, contributions=r.contributions[:1] * 2), "twice"),
    (lambda r: dataclasses.replace(r, contributions=tuple(dataclasses.replace(c, update_signature=bytes(64))
                                                          for c in r.contributions)), "not validly signed"),
    (lambda r: dataclasses.replace(r, contributions=tuple(dataclasses.replace(c, sketch_signature=bytes(64))
                                                          for c in r.contributions)), "not validly signed"),
    (lambda r: dataclasses.replace(r, contributions=(dataclasses.replace(r.contributions[0], client=999),)
                                   + r.contributions), "not enrolled"),
    (lambda r: dataclasses.replace(r, round=r.round + 1), "not validly signed"),  # signatures bind the round
    (lambda r: dataclasses.replace(r, session=bytes(16)), "not validly signed"),
    (lambda r: dataclasses.replace(r, length=r.length + 1), "not validly signed"),  # ... and the length
    (lambda r: dataclasses.replace(r, key_id=bytes(32)), "current key"),
    (lambda r: _with_aggregate(r, (r.aggregate[0][:-5],)), "not validly signed"),  # the challenge hashes it
    (lambda r: _with_aggregate(r, (b"\x00" * 100,)), "not validly signed"),
])
def test_key_holder_policy_refusals(aggregator, edit, match):
    with pytest.raises(DecryptionRefused, match=match):
        aggregator.key_holder.decrypt(edit(fresh_request(aggregator)))


@pytest.mark.parametrize("edit", [
    lambda r: _with_aggregate(r, r.aggregate * 2),
    lambda r: dataclasses.replace(r, length=1),
])
def test_key_holder_refuses_malformed_requests(aggregator, edit):
    with pytest.raises(MessageError):
        aggregator.key_holder.decrypt(edit(fresh_request(aggregator)))


def test_each_aggregator_has_its_own_key_and_refuses_another_ones_requests(aggregator):
    other = CKKSAggregator(CKKSParams(max_weight=10.0))
    assert other.public.key_id != aggregator.public.key_id
    assert other.key_holder.public_key != aggregator.key_holder.public_key
    with pytest.raises(DecryptionRefused, match="current key"):
        other.key_holder.decrypt(fresh_request(aggregator))


def test_a_suspended_key_holder_keeps_its_key_and_spent_rounds(aggregator):
    holder = aggregator.key_holder
    request = fresh_request(aggregator)
    holder.decrypt(request)
    back = KeyHolder.resume(holder.suspend(), holder.params, holder.directory)
    assert (back.public_key, back.key_id) == (holder.public_key, holder.key_id)
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        back.decrypt(request)
    with pytest.raises(MessageError, match="format"):
        KeyHolder.resume(b"\x01" + holder.suspend()[1:], holder.params, holder.directory)


@pytest.mark.parametrize("params", [CKKSParams(max_clients=1000), CKKSParams(precision_bits=12),
                                    CKKSParams(poly_modulus_degree=4096, modulus_bits=60)])
def test_ciphertexts_of_other_parameters_are_refused(aggregator, params):
    foreign = PublicContext(params, KeyHolder(params, {}).public_key).encrypt(np.ones(3))
    with pytest.raises(MessageError):
        aggregator.public.load_upload(foreign, 3)


def test_aggregator_rejects_tampered_and_truncated_updates(aggregator):
    ctx = RoundContext.new(1, (0, 1, 2), 20)
    good = aggregator.client_session(ctx, 0, np.zeros(20, np.float32), 1.0).start()
    server = aggregator.server_session(ctx)
    env = Envelope.from_bytes(good)
    body = bytearray(env.body)
    body[len(body) // 2] ^= 0xFF
    tampered = dataclasses.replace(env, body=bytes(body)).to_bytes()
    for bad in (good[:-1], good[:200], tampered):
        with pytest.raises((MessageError, AuthenticationError)):
            server.collect(0, bad)
    with pytest.raises(ProtocolError, match="claims sender"):
        server.collect(1, good)
    server.collect(0, good)
    with pytest.raises(ProtocolError, match="duplicate"):
        server.collect(0, good)


def test_a_single_survivor_is_never_decrypted(aggregator):
    ups = updates(3, 5)
    with pytest.raises(AggregationAborted, match="min_clients"):
        run_round(aggregator, ups, drop_stage={1: 0, 2: 0}, ctx=next_ctx(ups))
    with pytest.raises(AggregationAborted, match="min_clients"):  # ... nor after dropouts at the challenge
        run_round(aggregator, ups, drop_stage={1: 1, 2: 1}, ctx=next_ctx(ups))


def test_a_dropout_at_the_challenge_leaves_an_accurate_aggregate_of_the_rest(aggregator):
    ups = updates(5, 300, seed=3)
    with Capture(aggregator) as cap:
        _, result = run_round(aggregator, ups, weights={c: 10.0 for c in ups}, drop_stage={1: 1, 4: 1},
                              ctx=next_ctx(ups))
    assert result.contributors == (0, 2, 3) and result.details["challenges"] == 2
    assert [c.client for c in cap.request.contributions] == [0, 2, 3]
    exact = np.mean([ups[c] for c in (0, 2, 3)], axis=0)
    assert np.abs(result.mean - exact).max() <= 6 * aggregator.params.masking_error_std


def test_a_suspended_client_answers_like_the_live_one(aggregator):
    ups = updates(2, 50)
    ctx = next_ctx(ups)
    live = aggregator.client_session(ctx, 0, ups[0], 1.0)
    live.start()
    back = CKKSClient.resume(live.suspend(), ctx, 0, aggregator.identities.signing_key(0))
    challenge = seal_envelope(ctx, SERVER_ID, MessageKind.CKKS_CHALLENGE, b"r" * 32)
    assert back.handle(challenge) == live.handle(challenge)
    with pytest.raises(ProtocolError, match="format"):
        CKKSClient.resume(b"\x09" + live.suspend()[1:], ctx, 0, aggregator.identities.signing_key(0))
    with pytest.raises(ProtocolError, match="already handed over"):  # it keeps only its compact upload
        live.start()


def test_bad_updates_are_refused_by_the_client(aggregator):
    ctx = RoundContext.new(1, (0, 1), 4)
    for update, weight in ((np.array([np.nan, 0, 0, 0]), 1.0), (np.zeros(5), 1.0), (np.zeros(4), 11.0)):
        with pytest.raises(UpdateRejected):
            aggregator.client_session(ctx, 0, update, weight)


@pytest.mark.parametrize("kwargs, match", [
    (dict(poly_modulus_degree=3000), "poly_modulus_degree"),
    (dict(modulus_bits=60), "security limit"),
    (dict(poly_modulus_degree=1024, modulus_bits=27), "wrap"),  # the encryption noise fills 27 bits
    (dict(max_clients=10**8), "wrap"),
    (dict(max_clients=0), "max_clients"),
    (dict(precision_bits=1), "precision_bits"),
    (dict(clip=0.0), "clip"),
    (dict(flood_bits=40, release_bits=30), "flood_bits"),
    (dict(release_bits=50, flood_bits=50), "too fine"),
])
def test_parameters_are_validated(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        CKKSParams(**kwargs)


def test_too_many_clients_for_q0_is_refused():
    params = CKKSParams()
    with pytest.raises(ConfigurationError, match="wrap"):
        params.check_clients(params.max_clients + 1)
    params.check_clients(params.max_clients)


def test_errors_share_one_root():
    assert issubclass(DecryptionRefused, SecAggError)
