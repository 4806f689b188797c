"""Trust on first use on a SuperNode: the first enrolment sticks, a changed one is refused (no processes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Message, RecordDict  # noqa: E402

from federation.experiment import ExperimentConfig, SecureMode  # noqa: E402
from federation.flower import client_app  # noqa: E402
from federation.flower.codec import encode_directory, field, payload  # noqa: E402
from federation.flower.enrolment import (Enrolment, EnrolmentChanged, pin, pinned_directory,  # noqa: E402
                                         pinned_public_key, pinned_weight_bound)
from federation.flower.job import KEY_HOLDER_ROLE, FlowerJob  # noqa: E402
from federation.flower.node import NodeState  # noqa: E402
from secagg.ckks import CKKSParams, KeyHolder  # noqa: E402
from secagg.ckks.signing import public_key_payload  # noqa: E402
from secagg.errors import AuthenticationError, MessageError, ProtocolError  # noqa: E402
from secagg.primitives.keys import SigningKey  # noqa: E402


@pytest.fixture(scope="module")
def keys():
    """Two CKKS public keys, each signed by its own key-holder identity."""
    out = []
    for _ in range(2):
        identity, public_key = SigningKey.generate(), KeyHolder(CKKSParams(), {}).public_key
        out.append((identity, public_key, identity.sign(public_key_payload(public_key))))
    return out


def _node() -> NodeState:
    return NodeState(SimpleNamespace(state={}))


def _enrolment(key, directory=None) -> Enrolment:
    identity, public_key, signature = key
    directory = directory or {0: b"a" * 32, 1: b"b" * 32}
    return Enrolment(encode_directory(directory), identity.public_bytes(), public_key, signature)


def test_the_first_enrolment_is_pinned_and_may_be_repeated_unchanged(keys):
    node = _node()
    pin(node, _enrolment(keys[0]))
    pin(node, _enrolment(keys[0]))
    assert pinned_public_key(node) == keys[0][1]
    assert pinned_directory(node) == {0: b"a" * 32, 1: b"b" * 32}


@pytest.mark.parametrize("change", [
    lambda keys: _enrolment(keys[0], {0: b"a" * 32, 1: b"c" * 32}),  # another client identity
    lambda keys: _enrolment(keys[0], {0: b"a" * 32, 1: b"b" * 32, 2: b"c" * 32}),  # one more client
    lambda keys: _enrolment(keys[1]),  # another key holder with its own, validly signed, key
    lambda keys: Enrolment(_enrolment(keys[0]).directory),  # the CKKS key dropped
])
def test_a_changed_second_enrolment_is_refused_and_nothing_of_it_is_kept(keys, change):
    node = _node()
    pin(node, _enrolment(keys[0]))
    before = dict(node._record)
    with pytest.raises(EnrolmentChanged):
        pin(node, change(keys))
    assert dict(node._record) == before
    assert pinned_public_key(node) == keys[0][1]


def test_a_public_key_not_signed_by_the_key_holder_identity_is_never_pinned(keys):
    identity, public_key, _ = keys[0]
    server_made = keys[1][1]  # a key whose secret the server knows, presented under the key holder's identity
    node = _node()
    with pytest.raises(AuthenticationError):
        pin(node, Enrolment(encode_directory({}), identity.public_bytes(), server_made,
                            identity.sign(public_key_payload(public_key))))
    with pytest.raises(ProtocolError, match="never enrolled"):
        pinned_public_key(node)


def test_a_pinned_key_whose_signature_no_longer_verifies_is_not_used(keys):
    node = _node()
    pin(node, _enrolment(keys[0]))
    node.put("ckks_public", keys[1][1])  # state tampered behind the pinning logic
    with pytest.raises(AuthenticationError):
        pinned_public_key(node)


# The ClientApp handlers themselves, called as Flower would call them (without a SuperNode process).

@pytest.fixture
def flower_messages(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


def _context(tmp_path, **node_config) -> Context:
    job = FlowerJob(ExperimentConfig(clients=2, rounds=1, secure=SecureMode.CKKS), tmp_path / "out")
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config=job.run_config())


def _ask(handler, context: Context, action: str, **fields) -> Message:
    return handler(Message(payload(**fields), dst_node_id=1, message_type=f"query.{action}"), context)


def test_a_client_node_refuses_a_second_enrolment_with_another_key(tmp_path, flower_messages, keys):
    context = _context(tmp_path, **{"partition-id": 0})
    identity, public_key, signature = keys[0]
    first = dict(directory=encode_directory({0: b"a" * 32}), key_holder_identity=identity.public_bytes(),
                 public_key=public_key, public_key_signature=signature, weight_bound=50.0)
    assert field(_ask(client_app.enrol, context, "enrol", **first), "enrolled", int) == 1
    other_identity, other_key, other_signature = keys[1]
    second = dict(first, key_holder_identity=other_identity.public_bytes(), public_key=other_key,
                  public_key_signature=other_signature)
    with pytest.raises(MessageError, match="EnrolmentChanged"):
        field(_ask(client_app.enrol, context, "enrol", **second), "enrolled", int)
    with pytest.raises(MessageError, match="EnrolmentChanged"):
        field(_ask(client_app.enrol, context, "enrol", **dict(first, directory=encode_directory({0: b"x" * 32}))),
              "enrolled", int)
    with pytest.raises(MessageError, match="EnrolmentChanged: the weight_bound differs"):
        field(_ask(client_app.enrol, context, "enrol", **dict(first, weight_bound=1e9)), "enrolled", int)
    assert pinned_public_key(NodeState(context)) == public_key
    assert pinned_weight_bound(NodeState(context)) == 50.0


def test_the_key_holder_keeps_its_key_and_signs_it(tmp_path, flower_messages):
    context = _context(tmp_path, role=KEY_HOLDER_ROLE)
    first = _ask(client_app.hello, context, "hello")
    again = _ask(client_app.hello, context, "hello")
    public_key = field(first, "public_key", bytes)
    assert field(again, "public_key", bytes) == public_key
    enrolment = Enrolment(encode_directory({}), field(first, "identity", bytes), public_key,
                          field(first, "public_key_signature", bytes))
    enrolment.check()  # verifies
    own = _ask(client_app.enrol, context, "enrol", directory=encode_directory({}),
               key_holder_identity=field(first, "identity", bytes), weight_bound=50.0)
    assert field(own, "enrolled", int) == 1
    foreign = SigningKey.generate().public_bytes()
    refused = _ask(client_app.enrol, context, "enrol", directory=encode_directory({}), key_holder_identity=foreign,
                   weight_bound=50.0)
    with pytest.raises(MessageError, match="another key-holder identity"):
        field(refused, "enrolled", int)
