"""The Flower ServerApp: our round loop, driven through Flower's Grid.

At start it waits for the SuperNodes, greets them (each client says its id, example count and identity key;
the CKKS key holder its identity key and its public key, signed with it), sends every node the directory of
identity keys, the public weight bound (the largest example count) and, with CKKS, the key holder's identity
and signed public key (nodes pin these at first enrolment), then runs :class:`~federation.server.Federation`
with the :class:`FlowerRuntime`: over the run's app (the user's model and test set) or the built-in job. The ServerApp is the aggregator:
with ``--secure ckks`` it never holds the secret key, which stays on the key-holder SuperNode.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from federation import protection
from federation.allocator import pin_mmap_threshold
from federation.config import CKKS
from federation.errors import ConfigError, RuntimeFailure
from federation.experiment import RemoteClients
from federation.experiment_config import ExperimentConfig
from federation.flower.codec import encode_directory, field, payload
from federation.flower.job import KEY_HOLDER_ROLE, FlowerJob, nodes_needed
from federation.flower.polling import shorten_object_retries
from federation.flower.runtime import FlowerRuntime, exchange
from federation.flower.userapp import server_federation
from secagg.ckks.decryption_wire import decode_release, encode_request
from secagg.ckks.request import DecryptionRequest, Release
from secagg.ckks.signing import public_key_payload
from secagg.errors import AuthenticationError, DecryptionRefused, MessageError
from secagg.identity import IdentityRegistry
from secagg.primitives.keys import verify_signature

app = ServerApp()
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Roster:
    """Who answered the greeting: client id -> node id, client id -> examples and batches per local epoch,
    identity keys, and the key holder (CKKS)."""

    clients: dict[int, int]
    examples: dict[int, int]
    batches: dict[int, int]
    identities: IdentityRegistry
    key_holder: int | None = None
    public_key: bytes | None = None
    key_holder_identity: bytes | None = None
    public_key_signature: bytes | None = None


class RemoteKeyHolder:
    """The key holder on its SuperNode, as the CKKS server session sees it: ``decrypt`` is one message.

    No round can release without it, so it is declared ``lost`` (the reason; the run then stops) once it left
    ``patience`` decryption requests in a row unanswered, or its node is gone from the SuperLink's list."""

    def __init__(self, grid: Grid, node: int, timeout: float, patience: int = 2) -> None:
        self.grid, self.node, self.timeout, self.patience = grid, node, timeout, patience
        self.silent = 0
        self.lost: str | None = None

    def decrypt(self, request: DecryptionRequest) -> Release:
        message = Message(payload(request=encode_request(request)), dst_node_id=self.node,
                          message_type="query.decrypt", group_id=str(request.round))
        reply = exchange(self.grid, {0: message}, self.timeout).get(self.node)
        if reply is None:
            self.silent += 1
            if self.node not in self.grid.get_node_ids():
                self.lost = f"the key holder's SuperNode {self.node} left the SuperLink"
            elif self.silent >= self.patience:
                self.lost = (f"the key holder on SuperNode {self.node} did not answer {self.silent} decryption "
                             f"requests in a row (each waited {self.timeout:.0f} s)")
            raise DecryptionRefused("the key holder did not answer")
        self.silent = 0
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
    examples: dict[int, int] = {}
    batches: dict[int, int] = {}
    identities = IdentityRegistry()
    key_holder = public_key = key_holder_identity = signature = None
    for node, reply in sorted(replies.items()):
        error = _error_of(reply)
        if error:
            raise ConfigError(f"SuperNode {node} refused the run: {error}")
        if field(reply, "role", str) == KEY_HOLDER_ROLE:
            if key_holder is not None:
                raise ConfigError("two SuperNodes claim to be the key holder")
            key_holder, public_key = node, field(reply, "public_key", bytes)
            key_holder_identity = field(reply, "identity", bytes)
            signature = field(reply, "public_key_signature", bytes)
            try:
                verify_signature(key_holder_identity, signature, public_key_payload(public_key))
            except AuthenticationError:
                raise ConfigError(f"the key holder on SuperNode {node} did not sign its public key") from None
            continue
        client = field(reply, "client", int)
        if client in clients:
            raise ConfigError(f"two SuperNodes claim client id {client}")
        clients[client], examples[client] = node, field(reply, "examples", int)
        batches[client] = field(reply, "batches", int)
        if examples[client] < 1 or batches[client] < 1:
            raise ConfigError(f"client {client} on SuperNode {node} has no examples")
        identities.register(client, field(reply, "identity", bytes))
    if sorted(clients) != list(range(config.clients)):
        raise ConfigError(f"client ids {sorted(clients)} are not 0..{config.clients - 1}")
    if isinstance(config.protection(), CKKS) != (key_holder is not None):
        raise ConfigError("--secure ckks needs exactly one key-holder SuperNode (and no other mode uses one)")
    return Roster(clients, examples, batches, identities, key_holder, public_key, key_holder_identity, signature)


def enrol(grid: Grid, roster: Roster, bound: float, noise_multiplier: float | None, timeout: float) -> None:
    """Send every node the identity directory, the weight bound and, with DP, the noise multiplier (with CKKS
    also the key holder's identity, and clients its signed public key)."""
    directory = encode_directory(roster.identities.directory)
    common: dict[str, bytes | float] = {"directory": directory, "weight_bound": bound}
    if noise_multiplier is not None:
        common["noise_multiplier"] = noise_multiplier
    fields: dict[int, dict[str, bytes | float]] = {n: dict(common) for n in roster.clients.values()}
    if roster.key_holder is not None:
        assert roster.key_holder_identity is not None and roster.public_key is not None
        assert roster.public_key_signature is not None
        for extra in fields.values():
            extra.update(key_holder_identity=roster.key_holder_identity, public_key=roster.public_key,
                         public_key_signature=roster.public_key_signature)
        fields[roster.key_holder] = {**common, "key_holder_identity": roster.key_holder_identity}
    nodes = list(fields)
    messages = {n: Message(payload(**fields[n]), dst_node_id=n, message_type="query.enrol", group_id="enrol")
                for n in nodes}
    replies = exchange(grid, messages, timeout)
    missing = {n: "no answer" if n not in replies else _error_of(replies[n]) for n in nodes}
    missing = {n: why for n, why in missing.items() if why}
    if missing:
        reasons = "; ".join(f"{n}: {why}" for n, why in sorted(missing.items()))
        raise ConfigError(f"SuperNodes {sorted(missing)} did not accept the enrolment ({reasons})")


@app.main()
def main(grid: Grid, context: Context) -> None:
    from flwr.superlink.grid import http_grid

    job = FlowerJob.from_context(context)
    # an answer's objects asked again within 10 ms, not 1 s; given up after a stage timeout (its sender died)
    shorten_object_retries(http_grid, "pull_objects", max_time=job.stage_timeout)
    pin_mmap_threshold()  # a long-lived aggregator: large freed buffers go back to the system (federation.allocator)
    try:
        run(grid, job)
    except Exception as err:
        job.out.mkdir(parents=True, exist_ok=True)
        (job.out / "failed.txt").write_text(f"{type(err).__name__}: {err}\n")
        raise


def run(grid: Grid, job: FlowerJob) -> None:
    """Greet and enrol the nodes, then train: the whole server side of one Flower run."""
    config = job.config
    job.out.mkdir(parents=True, exist_ok=True)
    nodes = wait_for_nodes(grid, nodes_needed(config), job.connect_timeout)
    roster = greet(grid, nodes, config, job.stage_timeout)
    ids = range(config.clients)
    examples = tuple(roster.examples[c] for c in ids)
    bound = protection.weight_bound(config.privacy_mode(), examples)
    runtime = FlowerRuntime(grid, job.stage_timeout, progress=job.out / "progress.jsonl")
    key_holder = None if roster.key_holder is None else RemoteKeyHolder(grid, roster.key_holder, job.stage_timeout)
    parties = protection.RemoteParties(roster.identities, bound, key_holder, roster.public_key)
    # the ring, the CKKS modulus, the noise multiplier for the clients as they reported: refused (ConfigError)
    # before anyone is enrolled
    federation = server_federation(job, RemoteClients(runtime, parties, tuple(roster.clients[c] for c in ids),
                                                      examples, tuple(roster.batches[c] for c in ids)))
    enrol(grid, roster, bound, federation.noise_multiplier, job.stage_timeout)
    federation.history.config = {**config.describe(), "runtime": "flower", **({"app": job.app} if job.app else {})}

    def save(_record: object = None) -> None:
        federation.history.save(job.out, plot=False)
        if key_holder is not None and key_holder.lost:  # no later round could release: stop, the rounds saved
            raise RuntimeFailure(f"{key_holder.lost}; no round can be decrypted without it")

    federation.run(resume=job.resume, on_round=save)
    save()
    (job.out / "done.json").write_text(json.dumps({"rounds": len(federation.history)}) + "\n")


def _error_of(reply: Message) -> str | None:
    if reply.has_error():
        return reply.error.reason
    record = reply.content.config_records.get("secagg")
    error = None if record is None else record.get("error")
    return str(error) if error else None
