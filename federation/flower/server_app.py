"""The Flower ServerApp: our round loop, driven through Flower's Grid.

At start it waits for the SuperNodes, greets them (each client says its id and identity key; the CKKS key
holder its public key), sends every node the directory of identity keys, then runs
:class:`~federation.server.Federation` with the :class:`FlowerRuntime`. The ServerApp is the aggregator:
with ``--secure ckks`` it never holds the secret key, which stays on the key-holder SuperNode.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from federation.errors import ConfigError
from federation.experiment import (ExperimentConfig, RemoteClients, SecureMode, build_federation, ckks_params,
                                   masking_config)
from federation.flower.codec import encode_directory, field, payload
from federation.flower.job import KEY_HOLDER_ROLE, FlowerJob, nodes_needed
from federation.flower.runtime import FlowerRuntime, exchange
from federation.report import results_document, write_results
from secagg.aggregation import Aggregator
from secagg.ckks.decryption_wire import decode_release, encode_request
from secagg.ckks.keyholder import DecryptionRequest, Release
from secagg.ckks.protocol import CKKSAggregator
from secagg.errors import DecryptionRefused, MessageError
from secagg.identity import IdentityRegistry
from secagg.masking import MaskingAggregator
from secagg.plaintext import PlaintextAggregator

app = ServerApp()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Roster:
    """Who answered the greeting: client id -> node id, identity keys, and the key holder (CKKS)."""

    clients: dict[int, int]
    identities: IdentityRegistry
    key_holder: int | None = None
    public_key: bytes | None = None


class RemoteKeyHolder:
    """The key holder on its SuperNode, as the CKKS server session sees it: ``decrypt`` is one message."""

    def __init__(self, grid: Grid, node: int, timeout: float) -> None:
        self.grid, self.node, self.timeout = grid, node, timeout

    def decrypt(self, request: DecryptionRequest) -> Release:
        message = Message(payload(request=encode_request(request)), dst_node_id=self.node,
                          message_type="query.decrypt", group_id=str(request.round))
        reply = exchange(self.grid, {0: message}, self.timeout).get(self.node)
        if reply is None:
            raise DecryptionRefused("the key holder did not answer")
        try:
            return decode_release(request, field(reply, "release", bytes))
        except MessageError as err:
            raise DecryptionRefused(f"the key holder answered no release: {_error_of(reply) or err}") from None


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise ConfigError(f"only {len(nodes)} of {count} SuperNodes connected within {timeout:.0f} s")
        time.sleep(0.5)


def greet(grid: Grid, nodes: list[int], config: ExperimentConfig, timeout: float) -> Roster:
    hello = {n: Message(payload(), dst_node_id=n, message_type="query.hello", group_id="hello") for n in nodes}
    replies = exchange(grid, hello, timeout)
    clients: dict[int, int] = {}
    identities = IdentityRegistry()
    key_holder = public_key = None
    for node, reply in sorted(replies.items()):
        error = _error_of(reply)
        if error:
            raise ConfigError(f"SuperNode {node} refused the run: {error}")
        if field(reply, "role", str) == KEY_HOLDER_ROLE:
            if key_holder is not None:
                raise ConfigError("two SuperNodes claim to be the key holder")
            key_holder, public_key = node, field(reply, "public_key", bytes)
            continue
        client = field(reply, "client", int)
        if client in clients:
            raise ConfigError(f"two SuperNodes claim client id {client}")
        clients[client] = node
        identities.register(client, field(reply, "identity", bytes))
    if sorted(clients) != list(range(config.clients)):
        raise ConfigError(f"client ids {sorted(clients)} are not 0..{config.clients - 1}")
    if (config.secure is SecureMode.CKKS) != (key_holder is not None):
        raise ConfigError("--secure ckks needs exactly one key-holder SuperNode (and no other mode uses one)")
    return Roster(clients, identities, key_holder, public_key)


def enrol(grid: Grid, roster: Roster, timeout: float) -> None:
    """Send every node the identity directory (and clients the CKKS public key)."""
    directory = encode_directory(roster.identities.directory)
    nodes = list(roster.clients.values()) + ([roster.key_holder] if roster.key_holder is not None else [])
    extra = {"public_key": roster.public_key} if roster.public_key is not None else {}
    messages = {n: Message(payload(directory=directory, **extra), dst_node_id=n, message_type="query.enrol",
                           group_id="enrol") for n in nodes}
    replies = exchange(grid, messages, timeout)
    missing = [n for n in nodes if n not in replies or _error_of(replies[n])]
    if missing:
        raise ConfigError(f"SuperNodes {missing} did not accept the enrolment")


def server_aggregator(config: ExperimentConfig, weight_bound: float, roster: Roster, grid: Grid,
                      timeout: float) -> Aggregator:
    if config.secure is SecureMode.MASK:
        aggregator = MaskingAggregator(masking_config(config, weight_bound))
        aggregator.identities = roster.identities
        return aggregator
    if config.secure is SecureMode.CKKS:
        assert roster.key_holder is not None and roster.public_key is not None
        return CKKSAggregator.with_key_holder(ckks_params(config, weight_bound),
                                              RemoteKeyHolder(grid, roster.key_holder, timeout),
                                              roster.public_key, roster.identities)
    return PlaintextAggregator()


@app.main()
def main(grid: Grid, context: Context) -> None:
    job = FlowerJob.from_context(context)
    try:
        run(grid, job)
    except Exception as err:
        job.out.mkdir(parents=True, exist_ok=True)
        (job.out / "failed.txt").write_text(f"{type(err).__name__}: {err}\n")
        raise


def run(grid: Grid, job: FlowerJob) -> None:
    """Greet and enrol the nodes, then train: the whole server side of one Flower run."""
    config = job.experiment()
    job.out.mkdir(parents=True, exist_ok=True)
    nodes = wait_for_nodes(grid, nodes_needed(config), job.connect_timeout)
    roster = greet(grid, nodes, config, job.stage_timeout)
    enrol(grid, roster, job.stage_timeout)
    runtime = FlowerRuntime(grid, job.stage_timeout, progress=job.out / "progress.jsonl")
    remote = RemoteClients(runtime, tuple(roster.clients[c] for c in range(config.clients)),
                           lambda bound: server_aggregator(config, bound, roster, grid, job.stage_timeout))
    federation = build_federation(config, checkpoint_dir=job.out, remote=remote)
    started = time.perf_counter()
    settings = {**config.describe(), "runtime": "flower"}

    def save(_record: object = None) -> None:
        write_results(job.out, results_document(settings, federation.history, time.perf_counter() - started))

    federation.run(on_round=save)
    save()
    (job.out / "done.json").write_text(json.dumps({"rounds": len(federation.history)}) + "\n")


def _error_of(reply: Message) -> str | None:
    if reply.has_error():
        return reply.error.reason
    record = reply.content.config_records.get("secagg")
    error = None if record is None else record.get("error")
    return str(error) if error else None
