"""A deviating masking server for tests: honest client sessions, every server message under the test's control.

:class:`DeviatingServer` runs honest :class:`~secagg.masking.client.MaskingClient` sessions and an honest
:class:`~secagg.masking.server.MaskingServer` that only *proposes* each stage's messages; a ``rewrite``
callback may change, drop, split or replay any of them before delivery. It records everything honest
clients sent. :func:`exposed_inputs` then says which honest client's input the server (with its colluding
clients) could recover from that view: the attack succeeded.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np

from secagg.aggregation import AggregateResult, RoundContext
from secagg.errors import AggregationAborted, SecAggError
from secagg.masking import MaskingAggregator, MaskingConfig
from secagg.masking import messages as msg
from secagg.wire import Envelope, MessageKind

# rewrite(stage, recipient, proposed message, history of earlier deliveries) -> message to deliver, or None
Rewrite = Callable[[int, int, bytes, list[tuple[int, int, bytes]]], bytes | None]


def reseal(message: bytes, body: bytes, **changes) -> bytes:
    env = Envelope.from_bytes(message)
    fields = dict(kind=env.kind, session=env.session, round=env.round, sender=env.sender, body=body) | changes
    return Envelope(**fields).to_bytes()


def body_of(message: bytes) -> bytes:
    return Envelope.from_bytes(message).body


def kind_of(message: bytes) -> MessageKind:
    return Envelope.from_bytes(message).kind


class DeviatingServer:
    def __init__(self, n: int, config: MaskingConfig, *, dim: int = 8, colluders: frozenset[int] = frozenset(),
                 seed: int = 0) -> None:
        rng = np.random.default_rng(seed)  # test data only
        self.updates = {c: rng.uniform(-1, 1, dim).astype(np.float32) for c in range(n)}
        self.agg = MaskingAggregator(config)
        self.ctx = RoundContext.new(1, tuple(range(n)), dim)
        self.clients = {c: self.agg.client_session(self.ctx, c, self.updates[c], 1.0) for c in range(n)}
        self.degree, self.threshold = config.plan(n)
        self.colluders = colluders
        self.sent: list[tuple[int, bytes]] = []  # (client, message) for every honest upload
        self.delivered: list[tuple[int, int, bytes]] = []  # (stage, client, message) the server delivered
        self.refusals: dict[int, SecAggError] = {}
        self.partners: dict[int, set[int]] = {}  # whose shares each client masked with
        self.result: AggregateResult | None = None
        self.abort: str | None = None

    def run(self, rewrite: Rewrite | None = None, drop_stage: dict[int, int] | None = None) -> DeviatingServer:
        drop_stage = drop_stage or {}
        server = self.agg.server_session(self.ctx)
        uploads = {c: s.start() for c, s in self.clients.items() if drop_stage.get(c) != 0}
        stage = 0
        while True:
            for c, m in uploads.items():
                self.sent.append((c, m))
                try:
                    server.collect(c, m)
                except SecAggError:
                    pass  # the honest proposer refuses what does not fit its own (honest) view
            proposed = server.close_stage()
            if server.finished:
                break
            if proposed and kind_of(next(iter(proposed.values()))) is MessageKind.MASK_SHARE_RELAY:
                proposed = self._relay_everything(stage, next(iter(proposed.values())))
            stage += 1
            uploads = {}
            for c, m in proposed.items():
                if drop_stage.get(c, 99) <= stage or c in self.refusals:
                    continue
                m = rewrite(stage, c, m, self.delivered) if rewrite else m
                if m is None:
                    continue
                self.delivered.append((stage, c, m))
                uploads.update(self._deliver(c, m))
        try:
            self.result = server.result()
        except AggregationAborted as err:
            self.abort = str(err)
        return self

    def _relay_everything(self, stage: int, template: bytes) -> dict[int, bytes]:
        """Every share any client addressed to each client, whether the honest proposer accepted it or not."""
        relay: dict[int, dict[int, bytes]] = defaultdict(dict)
        for sender, message in self.sent:
            if kind_of(message) is MessageKind.MASK_SHARES:
                for recipient, ciphertext in msg.read_addressed(body_of(message)).items():
                    relay[recipient][sender] = ciphertext
        return {c: reseal(template, msg.write_addressed(sorted(items.items()))) for c, items in relay.items()}

    def _deliver(self, c: int, message: bytes) -> dict[int, bytes]:
        try:
            answer = self.clients[c].handle(message)
        except SecAggError as err:
            self.refusals[c] = err
            return {}
        if kind_of(answer) is MessageKind.MASK_INPUT:
            self.partners[c] = set(msg.read_addressed(body_of(message)))
        return {c: answer}


def _holders(run: DeviatingServer) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """Who can give the server a share of each client's self-mask seed b_u and of its mask key s_u: honest
    holders that revealed one, and colluders, who hold both shares of everyone who shared with them."""
    seed_holders: dict[int, set[int]] = defaultdict(set)
    key_holders: dict[int, set[int]] = defaultdict(set)
    for sender, message in run.sent:
        kind = kind_of(message)
        if kind is MessageKind.MASK_UNMASK_SHARES:
            for owner, (share_kind, _) in msg.read_unmask_shares(body_of(message)).items():
                holders = seed_holders if share_kind is msg.ShareKind.SELF_MASK_SEED else key_holders
                holders[owner].add(sender)
        elif kind is MessageKind.MASK_SHARES:
            for recipient in msg.read_addressed(body_of(message)):
                if recipient in run.colluders:
                    seed_holders[sender].add(recipient)
                    key_holders[sender].add(recipient)
    return seed_holders, key_holders


def both_secrets_known(run: DeviatingServer) -> set[int]:
    """Honest clients whose self-mask seed and mask key the server could both rebuild (t shares of each)."""
    seed_holders, key_holders = _holders(run)
    t = run.threshold
    return {u for u in run.clients if u not in run.colluders
            and len(seed_holders[u]) >= t and len(key_holders[u]) >= t}


def exposed_inputs(run: DeviatingServer) -> set[int]:
    """Honest clients whose input the server's view (with its colluders' secrets) unmasks.

    The server knows b_u once t holders can give it a share of b_u, and s_u likewise. A masked input
    ``x_u + PRG(b_u) + sum_v +-PRG(s_uv)`` is exposed when b_u is known and, for every partner v it was
    masked with, s_u or s_v is known (or v colludes).
    """
    seed_holders, key_holders = _holders(run)
    t = run.threshold
    known_seed = {u for u, h in seed_holders.items() if len(h) >= t}
    known_key = {u for u, h in key_holders.items() if len(h) >= t} | set(run.colluders)
    return {u for u, partners in run.partners.items()
            if u not in run.colluders and u in known_seed and (u in known_key or partners <= known_key)}
