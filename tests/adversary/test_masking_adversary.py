"""Pairwise masking against a server that deviates from the protocol (and a client that sends garbage).

Each attack of the active-adversary review is performed by :class:`DeviatingServer` against honest client
sessions, on the complete graph (classic SecAgg) and on a SecAgg+ graph, with and without the consistency
check where the attack applies. Honest clients must refuse with a typed error and the server's view must
never unmask a single client's input (:func:`exposed_inputs`) nor hold both secrets of any client.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.aggregation import RoundContext
from secagg.envelopes import seal_envelope
from secagg.errors import AggregationAborted, AuthenticationError, ConfigurationError, ProtocolError
from secagg.masking import MaskingAggregator, MaskingConfig
from secagg.masking import messages as msg
from secagg.masking.graph import Ring, graph_seed
from secagg.wire import SERVER_ID, BodyReader, BodyWriter, MessageKind

from tests.adversary.masking_server import (DeviatingServer, body_of, both_secrets_known, exposed_inputs, kind_of,
                                            reseal)
from tests.secagg.driver import run_round

# (clients, neighbours): the complete graph, and a SecAgg+ graph of degree 6 (threshold 4)
GRAPHS = {"complete": (8, 0), "secagg+": (16, 6)}
SETTINGS = [pytest.param(n, k, cc, id=f"{g}-{'consistency' if cc else 'plain'}")
            for g, (n, k) in GRAPHS.items() for cc in (False, True)]


def attack(n, k, consistency, rewrite=None, colluders=frozenset(), **kw):
    run = DeviatingServer(n, MaskingConfig(neighbors=k, consistency_check=consistency), colluders=colluders)
    return run.run(rewrite, **kw)


def assert_nothing_exposed(run):
    assert exposed_inputs(run) == set()
    assert both_secrets_known(run) == set()


def at(kind, victim, edit):
    """A rewrite that edits the body of ``kind`` messages sent to ``victim``."""
    def rewrite(stage, recipient, message, history):
        if recipient == victim and kind_of(message) is kind:
            return reseal(message, edit(body_of(message)))
        return message

    return rewrite


def without(ids, body, kind):
    """Remove ``ids`` from a key list, reveal list, relay, or survivor request body."""
    if kind is MessageKind.MASK_KEY_LIST:
        keys = msg.KeyList(body)
        return msg.write_key_list([keys[c] for c in keys.ids if c not in ids])
    if kind is MessageKind.MASK_REVEAL_LIST:
        return msg.write_reveals({c: r for c, r in msg.read_reveals(body).items() if c not in ids})
    if kind is MessageKind.MASK_SHARE_RELAY:
        return msg.write_addressed(sorted((c, x) for c, x in msg.read_addressed(body).items() if c not in ids))
    if kind is MessageKind.MASK_CONSISTENCY_REQUEST:
        reader = BodyReader(body)
        survivors = msg.read_ids(reader)
        return msg.write_ids(tuple(c for c in survivors if c not in ids)).to_bytes()
    survivors, signatures = msg.read_unmask_request(body)
    return msg.write_unmask_request(tuple(c for c in survivors if c not in ids),
                                    {c: s for c, s in signatures.items() if c not in ids})


def test_the_exposure_check_is_not_vacuous():
    """An honest round exposes nobody; with every other client colluding, everybody is exposed."""
    honest = attack(8, 0, False)
    assert honest.result is not None and honest.refusals == {}
    assert_nothing_exposed(honest)
    everyone = attack(8, 0, False, colluders=frozenset(range(1, 8)))
    assert exposed_inputs(everyone) == {0}


# 1. relay omission
@pytest.mark.parametrize("n, k, consistency", SETTINGS)
@pytest.mark.parametrize("kept", [0, 1])
def test_relay_omission_is_refused_before_the_input_is_masked(n, k, consistency, kept):
    def keep_few(body):
        relay = msg.read_addressed(body)
        return msg.write_addressed(sorted(relay.items())[:kept])

    run = attack(n, k, consistency, at(MessageKind.MASK_SHARE_RELAY, 0, keep_few))
    assert isinstance(run.refusals[0], ProtocolError) and "relayed" in str(run.refusals[0])
    assert 0 not in run.partners  # no masked input left the client
    assert_nothing_exposed(run)


# 2. split views of the key list
@pytest.mark.parametrize("n, k, consistency", SETTINGS)
def test_a_victim_shown_a_list_of_itself_and_colluders_refuses(n, k, consistency):
    degree, t = MaskingConfig(neighbors=k).plan(n)
    colluders = frozenset(range(1, t))  # t - 1 colluders: the most the threshold tolerates
    view = lambda body, kind: without(set(range(n)) - {0} - colluders, body, kind)
    run = attack(n, k, consistency, lambda s, c, m, h: reseal(m, view(body_of(m), kind_of(m)))
                 if c == 0 and kind_of(m) in (MessageKind.MASK_KEY_LIST, MessageKind.MASK_REVEAL_LIST) else m,
                 colluders=colluders)
    assert isinstance(run.refusals[0], ProtocolError) and "below the threshold" in str(run.refusals[0])
    assert_nothing_exposed(run)


@pytest.mark.parametrize("n, k, consistency", SETTINGS)
def test_a_split_key_list_makes_the_victims_shares_fail_to_decrypt(n, k, consistency):
    """The victim sees the list without client 5 (and matching reveals and relay): its transcript differs."""
    split = (MessageKind.MASK_KEY_LIST, MessageKind.MASK_REVEAL_LIST, MessageKind.MASK_SHARE_RELAY)

    run = DeviatingServer(n, MaskingConfig(neighbors=k, consistency_check=consistency))

    def rewrite(stage, recipient, message, history):
        if recipient == 0 and kind_of(message) in split:
            # the relay is cut to the victim's own (split-view) neighbourhood, as the server can compute it
            outside = set(range(n)) - set(run.clients[0]._neighbours) if kind_of(message) is split[2] else {5}
            return reseal(message, without(outside, body_of(message), kind_of(message)))
        return message

    run.run(rewrite)
    # the shares of partners that saw the real list do not decrypt; on a sparse graph the split view may
    # also leave the victim fewer than t partners' shares: refused either way, before masking
    refusal = run.refusals[0]
    assert isinstance(refusal, AuthenticationError) or "relayed" in str(refusal)
    assert 0 not in run.partners
    assert_nothing_exposed(run)


def test_a_forged_reveal_or_a_withheld_one_is_refused():
    """The server may not pick the graph seed: every listed reveal must be present and open its commitment."""
    def forge(body):
        reveals = msg.read_reveals(body)
        reveals[3] = bytes(32)
        return msg.write_reveals(reveals)

    run = attack(16, 6, True, at(MessageKind.MASK_REVEAL_LIST, 0, forge))
    assert "does not open its commitment" in str(run.refusals[0])
    run = attack(16, 6, True, at(MessageKind.MASK_REVEAL_LIST, 0, lambda b: without({3}, b, MessageKind.MASK_REVEAL_LIST)))
    assert "cover exactly" in str(run.refusals[0])
    run = attack(16, 6, True, drop_stage={3: 1})  # a client that never reveals: the round cannot go on
    assert run.result is None and "did not reveal" in run.abort


def test_the_graph_is_not_fixed_by_the_key_list_alone():
    """With the consistency check, the same key list with other reveals gives other neighbourhoods."""
    runs = [attack(16, 6, True) for _ in range(2)]
    assert all(r.result is not None for r in runs)
    graphs = [frozenset(r.clients[0]._neighbours) for r in runs]
    assert len(set(graphs)) == 2 or graphs[0] != frozenset(attack(16, 6, True).clients[0]._neighbours)


# 3. low thresholds, split survivor views
@pytest.mark.parametrize("threshold", [0.3, 0.49])
def test_threshold_fractions_below_half_are_refused(threshold):
    with pytest.raises(ConfigurationError, match=r"\[0.5, 1\]"):
        MaskingConfig(threshold=threshold)


@pytest.mark.parametrize("threshold, degree", [(2, 7), (3, 6), (10, 20)])
def test_absolute_thresholds_at_or_below_half_the_degree_are_refused(threshold, degree):
    n = degree + 1
    with pytest.raises(ConfigurationError, match="half"):
        MaskingAggregator(MaskingConfig(neighbors=0, threshold=threshold)).server_session(
            DeviatingServer(n, MaskingConfig(neighbors=0)).ctx)


@pytest.mark.parametrize("n, k", list(GRAPHS.values()))
def test_split_survivor_views_are_refused_with_the_consistency_check(n, k):
    """Half the clients are told client 0 dropped, half that it survived: signatures over one list fail."""
    def rewrite(stage, recipient, message, history):
        kind = kind_of(message)
        if recipient % 2 and kind in (MessageKind.MASK_CONSISTENCY_REQUEST, MessageKind.MASK_UNMASK_REQUEST):
            return reseal(message, without({0}, body_of(message), kind))
        return message

    run = attack(n, k, True, rewrite)
    assert run.result is None
    assert_nothing_exposed(run)


@pytest.mark.parametrize("n, k", list(GRAPHS.values()))
def test_split_survivor_views_never_give_both_secrets_of_a_client(n, k):
    """Without the consistency check, t > k/2 still keeps the server from t shares of b_u and t of s_u."""
    def rewrite(stage, recipient, message, history):
        if recipient % 2 and kind_of(message) is MessageKind.MASK_UNMASK_REQUEST:
            return reseal(message, without({0}, body_of(message), MessageKind.MASK_UNMASK_REQUEST))
        return message

    run = attack(n, k, False, rewrite)
    assert both_secrets_known(run) == set()


def partition(run, victim, groups_wanted, rng):
    """Clients into groups of at least t such that each neighbour of the victim has t neighbours outside its
    own group (what the partition attack needs); None if no such split is found."""
    graph = Ring(sorted(run.clients), run.degree, graph_seed(run.clients[victim]._transcript))
    ids, t = sorted(run.clients), run.threshold
    for _ in range(2000):
        order = list(rng.permutation(ids))
        group_of = {c: i % groups_wanted for i, c in enumerate(order)}
        if all(sum(group_of[h] != group_of[v] for h in graph.neighbours(v)) >= t
               for v in graph.neighbours(victim)):
            return group_of
    return None


@pytest.mark.parametrize("n, k, threshold", [(8, 0, 0.5), (16, 6, 0.5), (16, 6, 0.75), (40, 10, 0.5)])
def test_disjoint_survivor_views_each_signed_by_t_clients_are_refused(n, k, threshold):
    """Found by review: groups of t clients each sign their own list (the group plus the victim); with
    signers counted anywhere every client revealed, b_u from all and s_v of each partner from the others.
    Clients now require t signers among each owner's own neighbours before revealing its share."""
    run = DeviatingServer(n, MaskingConfig(neighbors=k, consistency_check=True, threshold=threshold))
    halt = lambda s, c, m, h: None if kind_of(m) is MessageKind.MASK_CONSISTENCY_REQUEST else m
    run.run(halt)  # honest up to the masked inputs
    assert len(run.partners) == n
    group_of = partition(run, 0, max(2, n // run.threshold), np.random.default_rng(n))
    assert group_of is not None
    groups = sorted(set(group_of.values()))
    views = {g: tuple(sorted({c for c in run.clients if group_of[c] == g} | {0})) for g in groups}
    send = lambda c, kind, body: run._deliver(c, seal_envelope(run.ctx, SERVER_ID, kind, body))
    signatures = {g: {} for g in groups}
    for c in run.clients:
        answer = send(c, MessageKind.MASK_CONSISTENCY_REQUEST, msg.write_ids(views[group_of[c]]).to_bytes())
        signatures[group_of[c]][c] = body_of(answer[c])
        run.sent.append((c, answer[c]))
    for c in run.clients:
        g = group_of[c]
        for answer in send(c, MessageKind.MASK_UNMASK_REQUEST, msg.write_unmask_request(views[g], signatures[g])).values():
            run.sent.append((c, answer))
    assert run.refusals and all(isinstance(e, ProtocolError) for e in run.refusals.values())
    assert_nothing_exposed(run)


def test_a_round_split_into_sub_rounds_of_the_servers_choosing_is_refused():
    """Found by review: a sub-list of t + 1 clients is a complete graph whose members the server picked.
    A key list must name a strict majority of the sampled participants."""
    n, chosen = 16, (0, 5, 9, 12, 15)
    run = DeviatingServer(n, MaskingConfig(neighbors=6, consistency_check=True))

    def sub_rounds(stage, recipient, message, history):
        if kind_of(message) is MessageKind.MASK_KEY_LIST:
            group = set(chosen) if recipient in chosen else set(range(n)) - set(chosen)
            return reseal(message, without(set(range(n)) - group, body_of(message), MessageKind.MASK_KEY_LIST))
        return message

    run.run(sub_rounds)
    assert "quorum" in str(run.refusals[0]) and 0 not in run.partners
    assert all(c in run.refusals for c in chosen)
    assert_nothing_exposed(run)


def test_a_signed_advertisement_without_a_commitment_is_refused_at_collect():
    """A client that signs an empty commitment is refused alone; it cannot make the key list unwritable."""
    run = DeviatingServer(4, MaskingConfig(neighbors=0, consistency_check=True))
    server = run.agg.server_session(run.ctx)
    liar = run.clients[0]
    payload = msg.advertisement_payload(run.ctx.session, run.ctx.round, 0, liar._c.public_bytes(),
                                        liar._s.public_bytes())
    ad = msg.Advertisement(0, liar._c.public_bytes(), liar._s.public_bytes(),
                           run.agg.identities.signing_key(0).sign(payload))
    with pytest.raises(ProtocolError, match="no commitment"):
        server.collect(0, seal_envelope(run.ctx, 0, MessageKind.MASK_ADVERTISE, msg.write_advertise(ad)))


def test_ids_beyond_the_shamir_field_are_refused_up_front():
    ctx = RoundContext.new(1, (0, 1, (1 << 31) - 2), 4)
    with pytest.raises(ConfigurationError, match="too large"):
        MaskingAggregator(MaskingConfig(neighbors=0)).server_session(ctx)


# 4. out-of-range contributions
class LyingClients(MaskingAggregator):
    """Client 0 adds ``shift`` to one word of its masked input (an out-of-range or wrapped word)."""

    def __init__(self, config, index, shift):
        super().__init__(config)
        self.index, self.shift = index, shift

    def client_session(self, ctx, client_id, update, weight):
        session = super().client_session(ctx, client_id, update, weight)
        if client_id != 0:
            return session
        handle, dtype = session.handle, session.encoder.dtype

        def lying(message):
            answer = handle(message)
            if kind_of(answer) is MessageKind.MASK_INPUT:
                words = BodyReader(body_of(answer)).array(dtype=dtype, shape=(session.encoder.length,)).copy()
                words[self.index:][:1] += dtype.type(self.shift % (1 << (8 * dtype.itemsize)))  # wraps
                answer = reseal(answer, BodyWriter().array(words).to_bytes())
            return answer

        session.handle = lying
        return session


@pytest.mark.parametrize("consistency", [False, True])
@pytest.mark.parametrize("index, shift", [(0, 1 << 28), (3, -(1 << 29)), (-1, 1 << 31), (-1, -(1 << 23))])
def test_out_of_range_words_abort_the_round_instead_of_shifting_the_mean(consistency, index, shift):
    ups = {c: np.zeros(8, np.float32) for c in range(6)}
    with pytest.raises(AggregationAborted, match="refused"):
        run_round(LyingClients(MaskingConfig(neighbors=0, consistency_check=consistency), index, shift), ups)


# a property: random deviating schedules
ACTIONS = ["pass"] * 8 + ["omit", "thin", "replay", "drop", "split"]


def schedule_rewrite(data, n):
    """Per client: a split view of the key list, a split view of the survivors; per message: relay
    omissions (down to 0-2 partners, or a random subset), replays of earlier messages, drops. Every choice is drawn up front (the protocol's own
    randomness must not change what hypothesis draws)."""
    ids = st.sets(st.integers(1, n - 1), max_size=3)
    hidden_keys = [data.draw(ids) - {c} for c in range(n)]
    hidden_survivors = [data.draw(ids) - {c} for c in range(n)]
    plan = iter(data.draw(st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 2**16 - 1)),
                                   min_size=8 * n, max_size=8 * n)))

    def rewrite(stage, recipient, message, history):
        kind = kind_of(message)
        action, bits = next(plan, ("pass", 0))
        if action == "drop":
            return None
        if action == "replay":
            earlier = [m for s, c, m in history if c == recipient and s < stage]
            return earlier[bits % len(earlier)] if earlier else message
        if action in ("omit", "thin") and kind is MessageKind.MASK_SHARE_RELAY:
            relay = sorted(msg.read_addressed(body_of(message)))  # omit: keep 0-2 partners; thin: a random subset
            gone = set(relay[bits % 3:]) if action == "omit" else {c for i, c in enumerate(relay) if bits >> i % 16 & 1}
            return reseal(message, without(gone, body_of(message), kind))
        if action == "split":
            if kind in (MessageKind.MASK_KEY_LIST, MessageKind.MASK_REVEAL_LIST):
                return reseal(message, without(hidden_keys[recipient], body_of(message), kind))
            if kind in (MessageKind.MASK_CONSISTENCY_REQUEST, MessageKind.MASK_UNMASK_REQUEST):
                return reseal(message, without(hidden_survivors[recipient], body_of(message), kind))
        return message

    return rewrite


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(GRAPHS.values())), st.data())
def test_no_deviating_schedule_exposes_an_input_with_the_consistency_check(graph, data):
    n, k = graph
    run = attack(n, k, True, schedule_rewrite(data, n))
    assert_nothing_exposed(run)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(GRAPHS.values())), st.data())
def test_no_deviating_schedule_gives_both_secrets_of_a_client_without_it(graph, data):
    n, k = graph
    run = attack(n, k, False, schedule_rewrite(data, n))
    assert both_secrets_known(run) == set()
