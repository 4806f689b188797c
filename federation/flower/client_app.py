"""The Flower ClientApp: one of our clients (or the CKKS key holder) on a SuperNode.

Every handler answers one message of the server's round logic and runs the same sans-I/O sessions as the
in-process runtime. Node settings (``--node-config``): ``partition-id`` (this client's id and data shard)
or ``role="key-holder"``. A client's model, data and training come from the run's app (see
:mod:`federation.flower.userapp`), or the built-in job without one. A refusal (bad message, failed check) is answered with an ``error`` field, so
the server excludes this client from the round and goes on. The enrolment is pinned at first use
(:mod:`federation.flower.enrolment`); the key holder keeps one key pair for the run and signs its public key.
A client's side of the run's stack, and the limits it keeps on what the server asks of it (the noise
multiplier, each round trained once), are in :mod:`federation.flower.node_stack`.

In a long-lived process (:mod:`federation.flower.executor`) the client, the open session and the key holder
stay live between messages (:mod:`federation.flower.live`); in a process per message (Flower's default) the
client is rebuilt at each message and a session is suspended into ``context.state`` between stages.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from dp.errors import DPError
from federation import protection
from federation.client import FederatedClient
from federation.config import CKKS
from federation.errors import ConfigError, FederationError
from federation.flower.codec import decode_context, field, has_field, json_field, payload
from federation.flower.enrolment import (Enrolment, check_key_holder_identity, pin, pinned_directory,
                                         pinned_noise_multiplier, pinned_weight_bound)
from federation.flower.job import KEY_HOLDER_ROLE, FlowerJob
from federation.flower.live import LIVE
from federation.flower.node import NodeState
from federation.flower.node_stack import checked_noise_multiplier, claim_round, node_stack, same_batches
from federation.flower.userapp import node_client
from federation.messages import decode_broadcast
from secagg.ckks.decryption_wire import decode_request, encode_release
from secagg.ckks.keyholder import KeyHolder
from secagg.ckks.signing import public_key_payload
from secagg.errors import ProtocolError, SecAggError

app = ClientApp()
Handler = Callable[[Message, Context], Message]


def refusals_answered(handler: Handler) -> Handler:
    """Answer our own errors as an ``error`` field (the round goes on without this node)."""

    @functools.wraps(handler)
    def wrapped(message: Message, context: Context) -> Message:
        try:
            return handler(message, context)
        except (SecAggError, FederationError, DPError) as err:
            NodeState(context).drop("session")
            cache = LIVE.run(context)
            if cache is not None:
                cache.close_session()
            return Message(payload(error=f"{type(err).__name__}: {err}"), reply_to=message)

    return wrapped


def _client_index(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except (KeyError, ValueError, TypeError):
        raise ConfigError("this SuperNode needs --node-config partition-id=<client id>") from None


def _is_key_holder(context: Context) -> bool:
    return str(context.node_config.get("role", "client")) == KEY_HOLDER_ROLE


def _client(job: FlowerJob, index: int, context: Context) -> FederatedClient:
    """This node's client: built once per run in a long-lived process, at every message otherwise."""
    cache = LIVE.run(context)
    if cache is None:
        return node_client(job, index)
    if cache.client is None:
        cache.client = node_client(job, index)
    return cache.client


@app.query("hello")
@refusals_answered
def hello(message: Message, context: Context) -> Message:
    """Say who this node is: a client (its id, examples and identity key) or the key holder (its identity key
    and its CKKS public key, signed with it). The key holder makes its key pair once per run."""
    job = FlowerJob.from_context(context)
    config, node = job.config, NodeState(context)
    if _is_key_holder(context):
        secure = config.protection()
        if not isinstance(secure, CKKS):
            raise ConfigError("a key-holder node is only needed with --secure ckks")
        holder = _key_holder(node, secure, config.min_clients, {}, config.per_round(), context)
        identity = node.identity()
        return Message(payload(role=KEY_HOLDER_ROLE, public_key=holder.public_key, identity=identity.public_bytes(),
                               public_key_signature=identity.sign(public_key_payload(holder.public_key))),
                       reply_to=message)
    index = _client_index(context)
    client = _client(job, index, context)
    node.put("batches", len(client.loader).to_bytes(8, "big"))  # what the server will account it by
    return Message(payload(role="client", client=index, examples=client.num_examples, batches=len(client.loader),
                           identity=node.identity().public_bytes()), reply_to=message)


def _key_holder(node: NodeState, secure: CKKS, min_clients: int, directory: dict[int, bytes],
                clients: int, context: Context) -> KeyHolder:
    """The key holder's one key pair, made at its first greeting and kept in the node's state. The keys
    depend on the ring only, not on the weight bound (which arrives with the enrolment, after the greeting)
    nor on ``clients`` per round (which size the scale and the compression of uploads). A long-lived process
    keeps the holder it resumed with the pinned directory (``directory`` not empty)."""
    cache = LIVE.run(context)
    if cache is not None and cache.key_holder is not None and directory:
        if cache.key_holder.directory == directory:
            return cache.key_holder
    bound = pinned_weight_bound(node) if node.get("weight_bound") is not None else 1.0
    config = FlowerJob.from_context(context).config
    sigma = protection.noise_share(secure, config.privacy_mode(), config.population(), pinned_noise_multiplier(node))
    params, state = protection.ckks_params(secure, bound, clients, sigma), node.get("key_holder")
    policy = protection.min_contributions(min_clients)
    if state is None:
        holder = KeyHolder(params, directory, min_clients=policy)
        node.put("key_holder", holder.suspend())
        return holder
    holder = KeyHolder.resume(state, params, directory, min_clients=policy)  # never a new key once greeted
    if cache is not None and directory:
        cache.key_holder = holder
    return holder


@app.query("enrol")
@refusals_answered
def enrol(message: Message, context: Context) -> Message:
    """Pin the directory of client identity keys, the public weight bound (and, with CKKS, the key holder's
    identity and signed public key) at the first enrolment; refuse a later one that differs."""
    node, job = NodeState(context), FlowerJob.from_context(context)
    directory, bound = field(message, "directory", bytes), field(message, "weight_bound", float)
    client = None if _is_key_holder(context) else _client(job, _client_index(context), context)
    z = checked_noise_multiplier(message, job, node, client)
    if not isinstance(job.config.protection(), CKKS):
        enrolment = Enrolment(directory, weight_bound=bound, noise_multiplier=z)
    elif _is_key_holder(context):
        enrolment = Enrolment(directory, field(message, "key_holder_identity", bytes), weight_bound=bound,
                              noise_multiplier=z)
        check_key_holder_identity(enrolment, node.identity())
    else:
        enrolment = Enrolment(directory, field(message, "key_holder_identity", bytes),
                              field(message, "public_key", bytes), field(message, "public_key_signature", bytes),
                              bound, z)
    pin(node, enrolment)
    return Message(payload(enrolled=1), reply_to=message)


@app.query("train")
@refusals_answered
def train(message: Message, context: Context) -> Message:
    """Train on the broadcast model, open this round's session and answer with its first upload."""
    job = FlowerJob.from_context(context)
    index, node, secure = _client_index(context), NodeState(context), job.config.protection()
    ctx_bytes = field(message, "ctx", bytes)
    ctx = decode_context(ctx_bytes)
    if index not in ctx.clients:
        raise ProtocolError(f"client {index} is not a participant of round {ctx.round}")
    claim_round(node, ctx.round, job.config.rounds)
    stack = node_stack(job, index, node, context)
    if has_field(message, "settings"):
        settings = json_field(message, "settings")
        if not isinstance(settings, dict) or not hasattr(stack.aggregator, "apply_round_settings"):
            raise ProtocolError("round settings this run does not have")
        stack.aggregator.apply_round_settings(settings)
    client = _client(job, index, context)
    if stack.dp_sgd is not None:
        same_batches(node, client)
        if client.private is None:
            client.enable_dp_sgd(stack.dp_sgd)
    local = client.fit(decode_broadcast(ctx, field(message, "broadcast", bytes)), field(message, "seed", int))
    started = time.perf_counter()
    session = stack.aggregator.client_session(ctx, index, local.delta, float(local.num_examples))
    upload = session.start()
    cache = LIVE.run(context)
    if cache is not None:  # a protected session has more stages: kept live, or suspended on the node
        cache.session = session if secure is not None else None
    elif secure is not None:
        node.put("ctx", ctx_bytes)
        node.put("session", session.suspend())
    loss = {} if local.train_loss is None else {"loss": local.train_loss}  # a training function may return none
    return Message(payload(upload=upload, examples=local.num_examples, train_seconds=local.seconds,
                           protocol_seconds=time.perf_counter() - started, **loss,
                           events=json.dumps([e.describe() for e in local.events])), reply_to=message)


@app.query("stage")
@refusals_answered
def stage(message: Message, context: Context) -> Message:
    """Answer the next stage of a multi-stage (masking, CKKS) session: the live one, or the node's suspended
    state."""
    started = time.perf_counter()
    secure = FlowerJob.from_context(context).config.protection()
    node, cache = NodeState(context), LIVE.run(context)
    if secure is None:
        raise ProtocolError("a plaintext round has no later stage")
    if cache is not None:
        session = cache.session
        if session is None:
            return _session_lost(message)
        upload = session.handle(field(message, "message", bytes))
        return Message(payload(upload=upload, protocol_seconds=time.perf_counter() - started), reply_to=message)
    state, ctx_bytes = node.get("session"), node.get("ctx")
    if state is None or ctx_bytes is None:
        return _session_lost(message)
    index = _client_index(context)
    job = FlowerJob.from_context(context)
    session = node_stack(job, index, node, context).aggregator.resume_client_session(  # type: ignore[attr-defined]
        decode_context(ctx_bytes), index, state)
    upload = session.handle(field(message, "message", bytes))
    node.put("session", session.suspend())
    return Message(payload(upload=upload, protocol_seconds=time.perf_counter() - started), reply_to=message)


def _session_lost(message: Message) -> Message:
    """This node holds no session to go on with (its ClientApp process restarted mid-round, and the session's
    secrets were only in memory): it cannot take part any further this round, which the server counts as a
    dropout (:func:`federation.flower.codec.lost`), as a node that fell silent."""
    return Message(payload(lost="no aggregation session in progress on this node"), reply_to=message)


@app.query("decrypt")
@refusals_answered
def decrypt(message: Message, context: Context) -> Message:
    """The key holder: decrypt one round's signed aggregate under its policy, never twice."""
    if not _is_key_holder(context):
        raise ProtocolError("decryption asked of a node that is not the key holder")
    config = FlowerJob.from_context(context).config
    node, secure = NodeState(context), config.protection()
    if node.get("key_holder") is None or not isinstance(secure, CKKS):
        raise ProtocolError("the key holder has no key: it was never greeted")
    holder = _key_holder(node, secure, config.min_clients, pinned_directory(node), config.per_round(), context)
    request = decode_request(field(message, "request", bytes))
    try:
        release = holder.decrypt(request)
    finally:  # a refused request leaves the state as it was; a decrypted round is spent before anything leaves
        node.put("key_holder", holder.suspend())
    return Message(payload(release=encode_release(request, release)), reply_to=message)
