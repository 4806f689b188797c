"""Every malicious-server move the issue lists is refused by the client, and bad uploads by the server."""

import numpy as np
import pytest

from secagg.aggregation import RoundContext
from secagg.errors import AuthenticationError, MessageError, ProtocolError, SecAggError
from secagg.masking import MaskingAggregator, MaskingConfig
from secagg.masking import messages as msg
from secagg.wire import MessageKind

from tests.adversary.masking_server import body_of, reseal
from tests.secagg.driver import run_round

N, DIM = 5, 8


def run(tamper, consistency=False, drop_stage=None):
    ups = {c: np.zeros(DIM, np.float32) for c in range(N)}
    agg = MaskingAggregator(MaskingConfig(neighbors=0, consistency_check=consistency))
    return run_round(agg, ups, tamper=tamper, drop_stage=drop_stage)


def tamper_once(stage, victim, rewrite):
    def tamper(s, recipient, message):
        return rewrite(message) if (s, recipient) == (stage, victim) else message

    return tamper


def edit_key_list(edit):
    def rewrite(message):
        keys = msg.KeyList(body_of(message))
        return reseal(message, msg.write_key_list(edit([keys[c] for c in keys.ids])))

    return rewrite


@pytest.mark.parametrize("edit, match", [
    (lambda ads: [a for a in ads if a.client != 0], "own keys"),
    (lambda ads: [msg.Advertisement(0, ads[1].c_pk, ads[0].s_pk)] + ads[1:], "own keys"),
    (lambda ads: ads + [msg.Advertisement(77, b"x" * 32, b"y" * 32)], "outside this round"),
    (lambda ads: ads[:1] + [msg.Advertisement(1, ads[0].c_pk, ads[0].s_pk)] + ads[2:], "repeats a public key"),
    (lambda ads: ads[:1], "below the threshold"),
])
def test_client_refuses_a_bad_key_list(edit, match):
    with pytest.raises(ProtocolError, match=match):
        run(tamper_once(1, 0, edit_key_list(edit)))


def test_duplicate_ids_in_a_key_list_are_malformed():
    with pytest.raises(MessageError, match="strictly increasing"):
        run(tamper_once(1, 0, edit_key_list(lambda ads: ads + ads[-1:])))


def test_client_refuses_shares_from_non_neighbours():
    cfg_sparse = MaskingConfig(neighbors=2)
    ups = {c: np.zeros(DIM, np.float32) for c in range(8)}

    def tamper(stage, recipient, message):
        if stage == 2 and recipient == 0:
            relay = msg.read_addressed(body_of(message))
            relay.update({c: b"z" * 60 for c in range(8) if c != 0})  # everyone, not just the 2 neighbours
            return reseal(message, msg.write_addressed(sorted(relay.items())))
        return message

    with pytest.raises(ProtocolError, match="not neighbours"):
        run_round(MaskingAggregator(cfg_sparse), ups, tamper=tamper)


def edit_unmask_request(edit):
    def rewrite(message):
        survivors, sigs = msg.read_unmask_request(body_of(message))
        survivors, sigs = edit(survivors, sigs)
        return reseal(message, msg.write_unmask_request(survivors, sigs))

    return rewrite


@pytest.mark.parametrize("edit, match", [
    (lambda s, g: (tuple(c for c in s if c != 0), g), "leaves out this client"),
    (lambda s, g: (s[:2], g), "below the threshold"),
    (lambda s, g: (s + (42,), g), "never advertised"),
])
def test_client_refuses_an_inconsistent_survivor_list(edit, match):
    with pytest.raises(ProtocolError, match=match):
        run(tamper_once(3, 0, edit_unmask_request(edit)))


def test_survivor_list_naming_a_client_whose_shares_were_withheld_is_refused():
    def tamper(stage, recipient, message):
        if stage == 2 and recipient == 0:  # withhold client 1's shares from client 0
            relay = msg.read_addressed(body_of(message))
            relay.pop(1)
            return reseal(message, msg.write_addressed(sorted(relay.items())))
        return message

    with pytest.raises(ProtocolError, match="never relayed"):
        run(tamper)


def test_client_never_reveals_both_shares_of_a_peer():
    """After answering one unmask request, a second one (say, claiming a survivor dropped) is refused."""
    ctx = RoundContext.new(1, tuple(range(N)), DIM)
    agg = MaskingAggregator(MaskingConfig(neighbors=0))
    sessions = {c: agg.client_session(ctx, c, np.zeros(DIM, np.float32), 1.0) for c in range(N)}
    server = agg.server_session(ctx)
    uploads = {c: s.start() for c, s in sessions.items()}
    for _ in range(3):
        for c, m in uploads.items():
            server.collect(c, m)
        replies = server.close_stage()
        uploads = {c: sessions[c].handle(m) for c, m in replies.items()}
    revealed = msg.read_unmask_shares(body_of(uploads[0]))
    assert {kind for kind, _ in revealed.values()} == {msg.ShareKind.SELF_MASK_SEED}
    second = reseal(replies[0], msg.write_unmask_request((0, 2, 3, 4), {}))  # "client 1 dropped after all"
    with pytest.raises(ProtocolError, match="expects no message"):
        sessions[0].handle(second)


def test_replayed_and_foreign_messages_are_refused():
    ctx = RoundContext.new(1, (0, 1, 2), DIM)
    other = RoundContext.new(2, (0, 1, 2), DIM)
    agg = MaskingAggregator(MaskingConfig(neighbors=0))
    client = agg.client_session(ctx, 0, np.zeros(DIM, np.float32), 1.0)
    server = agg.server_session(ctx)
    foreign = agg.client_session(other, 1, np.zeros(DIM, np.float32), 1.0).start()
    with pytest.raises(ProtocolError, match="another session"):
        server.collect(1, foreign)
    first = client.start()
    with pytest.raises(ProtocolError, match="claims sender"):
        server.collect(2, first)
    server.collect(0, first)
    with pytest.raises(ProtocolError, match="duplicate"):
        server.collect(0, first)
    with pytest.raises(ProtocolError, match="may not send"):
        server.collect(9, first)
    with pytest.raises(ProtocolError, match="in state"):
        client.start()


def test_client_refuses_a_message_not_from_the_server():
    def tamper(stage, recipient, message):
        return reseal(message, body_of(message), sender=3) if stage == 1 else message

    with pytest.raises(ProtocolError, match="claims sender"):
        run(tamper)


def test_tampered_share_ciphertext_fails_authentication_at_unmasking():
    def tamper(stage, recipient, message):
        if stage == 2 and recipient == 0:
            relay = msg.read_addressed(body_of(message))
            ct = bytearray(relay[1])
            ct[-1] ^= 1
            relay[1] = bytes(ct)
            return reseal(message, msg.write_addressed(sorted(relay.items())))
        return message

    with pytest.raises(AuthenticationError, match="decryption failed"):
        run(tamper)


def test_a_refusal_ends_the_clients_round():
    ctx = RoundContext.new(1, tuple(range(3)), DIM)
    client = MaskingAggregator(MaskingConfig(neighbors=0)).client_session(ctx, 0, np.zeros(DIM, np.float32), 1.0)
    client.start()
    with pytest.raises(MessageError):
        client.handle(b"garbage")
    with pytest.raises(ProtocolError, match="expects no message"):
        client.handle(b"anything")


class TestConsistencyCheck:
    def test_forged_signature_on_the_survivor_list_is_refused(self):
        def forge(s, g):
            return s, {c: bytes(64) for c in g}

        with pytest.raises(AuthenticationError):
            run(tamper_once(5, 0, edit_unmask_request(forge)), consistency=True)

    def test_unmask_survivors_must_equal_the_signed_ones(self):
        with pytest.raises(ProtocolError, match="other survivors"):
            run(tamper_once(5, 0, edit_unmask_request(lambda s, g: (s[:-1], g))), consistency=True)

    def test_too_few_signatures_are_refused(self):
        with pytest.raises(ProtocolError, match="neighbours signed the survivor list"):
            run(tamper_once(5, 0, edit_unmask_request(lambda s, g: (s, dict(list(g.items())[:1])))),
                consistency=True)

    def test_server_substituting_advertised_keys_is_caught(self):
        def swap(ads):
            from secagg.primitives.keys import AgreementKey

            fake = AgreementKey.generate().public_bytes()
            return [msg.Advertisement(a.client, a.c_pk, fake if a.client == 1 else a.s_pk, a.signature, a.commitment)
                    for a in ads]

        with pytest.raises(AuthenticationError):
            run(tamper_once(1, 0, edit_key_list(swap)), consistency=True)

    def test_server_refuses_an_unsigned_advertisement(self):
        ctx = RoundContext.new(1, (0, 1, 2), DIM)
        plain = MaskingAggregator(MaskingConfig(neighbors=0)).client_session(ctx, 0, np.zeros(DIM, np.float32), 1.0)
        server = MaskingAggregator(MaskingConfig(neighbors=0, consistency_check=True)).server_session(ctx)
        with pytest.raises(SecAggError):
            server.collect(0, plain.start())


def test_server_refuses_malformed_uploads():
    ctx = RoundContext.new(1, (0, 1, 2), DIM)
    agg = MaskingAggregator(MaskingConfig(neighbors=0))
    server = agg.server_session(ctx)
    good = agg.client_session(ctx, 0, np.zeros(DIM, np.float32), 1.0).start()
    for bad in (good[:-1], good + b"x", b"", good[:4] + b"\x09" + good[5:]):
        with pytest.raises(MessageError):
            server.collect(0, bad)
    wrong_kind = reseal(good, body_of(good), kind=MessageKind.MASK_INPUT)
    with pytest.raises(MessageError, match="expected a MASK_ADVERTISE"):
        server.collect(0, wrong_kind)
