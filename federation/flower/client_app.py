"""The Flower ClientApp: one of our clients (or the CKKS key holder) on a SuperNode.

Every handler answers one message of the server's round logic and runs the same sans-I/O sessions as the
in-process runtime. Node settings (``--node-config``): ``partition-id`` (this client's id and data shard)
or ``role="key-holder"``. A refusal (bad message, failed check) is answered with an ``error`` field, so
the server excludes this client from the round and goes on. The enrolment is pinned at first use
(:mod:`federation.flower.enrolment`); the key holder keeps one key pair for the run and signs its public key.
"""

from __future__ import annotations

import functools
import time
from typing import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from dp.errors import DPError
from federation.errors import ConfigError, FederationError
from federation import protection
from federation.experiment import ExperimentConfig, SecureMode, local_client
from federation.flower.codec import decode_context, decode_directory, field, payload
from federation.flower.enrolment import (Enrolment, check_key_holder_identity, pin, pinned_directory,
                                         pinned_public_key)
from federation.flower.job import KEY_HOLDER_ROLE, FlowerJob
from federation.flower.node import NodeState
from federation.messages import decode_broadcast
from secagg.aggregation import ClientSession, RoundContext
from secagg.ckks.decryption_wire import decode_request, encode_release
from secagg.ckks.keyholder import KeyHolder
from secagg.ckks.packing import PublicContext
from secagg.ckks.protocol import CKKSClient
from secagg.ckks.signing import public_key_payload
from secagg.errors import ProtocolError, SecAggError
from secagg.masking.client import MaskingClient
from secagg.plaintext import PlaintextClient

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
            return Message(payload(error=f"{type(err).__name__}: {err}"), reply_to=message)

    return wrapped


def _client_index(context: Context) -> int:
    try:
        return int(context.node_config["partition-id"])
    except (KeyError, ValueError, TypeError):
        raise ConfigError("this SuperNode needs --node-config partition-id=<client id>") from None


def _is_key_holder(context: Context) -> bool:
    return str(context.node_config.get("role", "client")) == KEY_HOLDER_ROLE


@app.query("hello")
@refusals_answered
def hello(message: Message, context: Context) -> Message:
    """Say who this node is: a client (its id, examples and identity key) or the key holder (its identity key
    and its CKKS public key, signed with it). The key holder makes its key pair once per run."""
    config = FlowerJob.from_context(context).experiment()
    node = NodeState(context)
    if _is_key_holder(context):
        if config.secure is not SecureMode.CKKS:
            raise ConfigError("a key-holder node is only needed with --secure ckks")
        _, weight_bound = local_client(config, 0)
        params, state = protection.ckks_params(config.protection(), weight_bound), node.get("key_holder")
        if state is None:
            holder = KeyHolder(params, {}, min_clients=protection.min_contributions(config.min_clients))
            node.put("key_holder", holder.suspend())
            node.put_float("weight_bound", weight_bound)
        else:  # greeted again: the same key, never a new one the server could ask to have replaced
            holder = KeyHolder.resume(state, params, {}, min_clients=protection.min_contributions(config.min_clients))
        identity = node.identity()
        return Message(payload(role=KEY_HOLDER_ROLE, public_key=holder.public_key, identity=identity.public_bytes(),
                               public_key_signature=identity.sign(public_key_payload(holder.public_key))),
                       reply_to=message)
    index = _client_index(context)
    client, _ = local_client(config, index)
    return Message(payload(role="client", client=index, examples=client.num_examples,
                           identity=node.identity().public_bytes()), reply_to=message)


@app.query("enrol")
@refusals_answered
def enrol(message: Message, context: Context) -> Message:
    """Pin the directory of client identity keys (and, with CKKS, the key holder's identity and signed public
    key) at the first enrolment; refuse a later one that differs."""
    node = NodeState(context)
    directory = field(message, "directory", bytes)
    if FlowerJob.from_context(context).experiment().secure is not SecureMode.CKKS:
        enrolment = Enrolment(directory)
    elif _is_key_holder(context):
        enrolment = Enrolment(directory, field(message, "key_holder_identity", bytes))
        check_key_holder_identity(enrolment, node.identity())
    else:
        enrolment = Enrolment(directory, field(message, "key_holder_identity", bytes),
                              field(message, "public_key", bytes), field(message, "public_key_signature", bytes))
    pin(node, enrolment)
    return Message(payload(enrolled=1), reply_to=message)


@app.query("train")
@refusals_answered
def train(message: Message, context: Context) -> Message:
    """Train on the broadcast model, open this round's session and answer with its first upload."""
    config = FlowerJob.from_context(context).experiment()
    index, node = _client_index(context), NodeState(context)
    ctx_bytes = field(message, "ctx", bytes)
    ctx = decode_context(ctx_bytes)
    if index not in ctx.clients:
        raise ProtocolError(f"client {index} is not a participant of round {ctx.round}")
    client, weight_bound = local_client(config, index)
    local = client.fit(decode_broadcast(ctx, field(message, "broadcast", bytes)), field(message, "seed", int))
    started = time.perf_counter()
    session = _open_session(config, weight_bound, ctx, index, node, local.delta, float(local.num_examples))
    upload = session.start()
    if isinstance(session, (MaskingClient, CKKSClient)):  # sessions of more than one stage
        node.put_float("weight_bound", weight_bound)
        node.put("ctx", ctx_bytes)
        node.put("session", session.suspend())
    return Message(payload(upload=upload, examples=local.num_examples, loss=local.train_loss or 0.0,
                           train_seconds=local.seconds, protocol_seconds=time.perf_counter() - started),
                   reply_to=message)


@app.query("stage")
@refusals_answered
def stage(message: Message, context: Context) -> Message:
    """Answer the next stage of a multi-stage (masking, CKKS) session from the node's suspended state."""
    started = time.perf_counter()
    config = FlowerJob.from_context(context).experiment()
    node = NodeState(context)
    state, ctx_bytes, weight_bound = node.get("session"), node.get("ctx"), node.get_float("weight_bound")
    if state is None or ctx_bytes is None or weight_bound is None:
        raise ProtocolError("no aggregation session in progress on this node")
    ctx = decode_context(ctx_bytes)
    session: MaskingClient | CKKSClient
    if config.secure is SecureMode.CKKS:
        session = CKKSClient.resume(state, ctx, _client_index(context), node.identity())
    else:
        mcfg = protection.masking_config(config.protection(), weight_bound)
        session = MaskingClient.resume(state, ctx, _client_index(context), mcfg,
                                       mcfg.encoder(ctx.dimension, len(ctx.clients)), node.identity(),
                                       decode_directory(node.get("directory") or b""))
    upload = session.handle(field(message, "message", bytes))
    node.put("session", session.suspend())
    return Message(payload(upload=upload, protocol_seconds=time.perf_counter() - started), reply_to=message)


@app.query("decrypt")
@refusals_answered
def decrypt(message: Message, context: Context) -> Message:
    """The key holder: decrypt one round's signed aggregate under its policy, never twice."""
    if not _is_key_holder(context):
        raise ProtocolError("decryption asked of a node that is not the key holder")
    config = FlowerJob.from_context(context).experiment()
    node = NodeState(context)
    state, weight_bound = node.get("key_holder"), node.get_float("weight_bound")
    if state is None or weight_bound is None:
        raise ProtocolError("the key holder has no key: it was never greeted")
    holder = KeyHolder.resume(state, protection.ckks_params(config.protection(), weight_bound), pinned_directory(node),
                              min_clients=protection.min_contributions(config.min_clients))
    request = decode_request(field(message, "request", bytes))
    try:
        release = holder.decrypt(request)
    finally:  # a refused request leaves the state as it was; a decrypted round is spent before anything leaves
        node.put("key_holder", holder.suspend())
    return Message(payload(release=encode_release(request, release)), reply_to=message)


def _open_session(config: ExperimentConfig, weight_bound: float, ctx: RoundContext, index: int, node: NodeState,
                  update, weight: float) -> ClientSession:
    if config.secure is SecureMode.MASK:
        mcfg = protection.masking_config(config.protection(), weight_bound)
        return MaskingClient(ctx, index, update, weight, mcfg, mcfg.encoder(ctx.dimension, len(ctx.clients)),
                             node.identity(), decode_directory(node.get("directory") or b""))
    if config.secure is SecureMode.CKKS:
        public = PublicContext(protection.ckks_params(config.protection(), weight_bound), pinned_public_key(node))
        return CKKSClient(ctx, index, update, weight, public, node.identity())
    return PlaintextClient(ctx, index, update, weight)
