"""The server side of pairwise-masking secure aggregation, as a sans-I/O state machine.

It relays keys and encrypted shares, sums the masked inputs modulo 2^w, and removes the masks with the
shares survivors reveal: each survivor's self-mask seed b, and each dropped client's mask key s_sk, from
which it recomputes the pairwise masks that client's surviving neighbours added. It learns the sum of the
survivors' inputs and nothing else, as long as fewer than t of any client's neighbours collude with it.

Client sets, as in the paper: U1 advertised keys, U2 sent shares, U3 sent masked inputs (the survivors),
U4 signed the survivor list (consistency check only), U5 revealed shares. With the consistency check a
reveal stage sits between U1 and U2: every listed client must open its commitment or the round aborts.
Each masked input is added to the running sum when it arrives and not kept, so the server holds one sum
whatever the number of clients (per client it keeps only keys, relayed shares and signatures).
The released sum is checked against what the survivors' clipped encodings can produce (a client sending
out-of-range ring words aborts the round instead of shifting the mean).
"""

from __future__ import annotations

import enum
from typing import Iterable

import numpy as np

from secagg.aggregation import AggregateResult, RoundContext
from secagg.encoding import FixedPointEncoder
from secagg.envelopes import open_envelope, seal_envelope
from secagg.errors import AggregationAborted, MessageError, ProtocolError, UpdateRejected
from secagg.masking import messages as msg
from secagg.masking.config import MaskingConfig
from secagg.masking.graph import graph_seed, neighbours
from secagg.masking.messages import Advertisement, ShareKind
from secagg.primitives import shamir
from secagg.primitives.keys import AgreementKey, Purpose, verify_signature
from secagg.primitives.prg import MaskExpander
from secagg.wire import SERVER_ID, BodyReader, MessageKind


class _Stage(enum.Enum):
    ADVERTISE = MessageKind.MASK_ADVERTISE
    REVEAL = MessageKind.MASK_REVEAL
    SHARES = MessageKind.MASK_SHARES
    INPUT = MessageKind.MASK_INPUT
    CONSISTENCY = MessageKind.MASK_CONSISTENCY_SIGNATURE
    UNMASK = MessageKind.MASK_UNMASK_SHARES
    DONE = None


class MaskingServer:
    def __init__(self, ctx: RoundContext, config: MaskingConfig, encoder: FixedPointEncoder,
                 directory: dict[int, bytes]) -> None:
        self.ctx, self.config, self.encoder, self.directory = ctx, config, encoder, directory
        self._stage = _Stage.ADVERTISE
        self._received: dict[int, object] = {}
        self._keys: dict[int, Advertisement] = {}
        self._key_list = b""
        self._transcript = b""
        self._graph: dict[int, frozenset[int]] = {}
        self._degree, self._threshold = config.round_plan(ctx.clients)
        self._shares: dict[int, dict[int, bytes]] = {}
        self._sum = np.zeros(encoder.length, dtype=encoder.dtype)
        self._survivors: tuple[int, ...] = ()
        self._signatures: dict[int, bytes] = {}
        self._abort: str | None = None
        self._details: dict[str, float] = {}

    @property
    def finished(self) -> bool:
        return self._stage is _Stage.DONE

    def collect(self, sender: int, message: bytes) -> None:
        if self.finished:
            raise ProtocolError("round already closed")
        if sender not in self._eligible():
            raise ProtocolError(f"client {sender} may not send in the {self._stage.name} stage")
        if sender in self._received:
            raise ProtocolError(f"duplicate {self._stage.name} message from client {sender}")
        body = open_envelope(self.ctx, message, self._stage.value, sender=sender,
                             max_body=self.encoder.length * self.encoder.dtype.itemsize + 64 * 1024 * 1024)
        self._received[sender] = self._parse(sender, body)

    def close_stage(self) -> dict[int, bytes]:
        if self.finished:
            return {}
        received, self._received = self._received, {}
        step = {_Stage.ADVERTISE: self._close_advertise, _Stage.REVEAL: self._close_reveal,
                _Stage.SHARES: self._close_shares,
                _Stage.INPUT: self._close_input, _Stage.CONSISTENCY: self._close_consistency,
                _Stage.UNMASK: self._close_unmask}[self._stage]
        try:
            return step(received)
        except AggregationAborted as err:
            self._abort, self._stage = str(err), _Stage.DONE
            return {}

    def result(self) -> AggregateResult:
        if not self.finished:
            raise ProtocolError("result requested before the round closed")
        if self._abort is not None:
            raise AggregationAborted(self._abort)
        try:
            mean, weight = self.encoder.decode(self._sum, len(self._survivors))
        except UpdateRejected as err:
            raise AggregationAborted(f"unmasked sum refused: {err}") from None
        return AggregateResult(mean, weight, self._survivors, details=dict(self._details))

    # parsing of one upload per stage
    def _parse(self, sender: int, body: bytes) -> object:
        if self._stage is _Stage.ADVERTISE:
            ad = msg.read_advertise(sender, body)
            if self.config.consistency_check:
                if len(ad.commitment) != msg.DIGEST_BYTES:
                    raise ProtocolError(f"client {sender} advertised no commitment")
                verify_signature(self._identity(sender), ad.signature, msg.advertisement_payload(
                    self.ctx.session, self.ctx.round, sender, ad.c_pk, ad.s_pk, ad.commitment))
            elif ad.signature or ad.commitment:
                raise ProtocolError(f"client {sender} signed an advertisement without the consistency check")
            return ad
        if self._stage is _Stage.REVEAL:
            if msg.commitment_of(self.ctx.session, self.ctx.round, sender, body) != self._keys[sender].commitment:
                raise ProtocolError(f"client {sender}'s reveal does not open its commitment")
            return bytes(body)
        if self._stage is _Stage.SHARES:
            shares = msg.read_addressed(body)
            if set(shares) != set(self._graph[sender]):
                raise ProtocolError(f"client {sender} sent shares to other clients than its neighbours")
            return shares
        if self._stage is _Stage.INPUT:  # folded into the sum at once: the server keeps no client's input
            reader = BodyReader(body)
            words = reader.array(dtype=self.encoder.dtype, shape=(self.encoder.length,), copy=False)
            reader.finish()
            np.add(self._sum, words, out=self._sum)
            return True
        if self._stage is _Stage.CONSISTENCY:
            payload = msg.survivors_payload(self._transcript, self._survivors)
            verify_signature(self._identity(sender), body, payload)
            return body
        shares = msg.read_unmask_shares(body)
        alive = set(self._survivors)
        for owner, (kind, _) in shares.items():
            if owner not in self._graph[sender] or owner not in self._shares:
                raise ProtocolError(f"client {sender} revealed a share of a non-neighbour {owner}")
            if kind is not (ShareKind.SELF_MASK_SEED if owner in alive else ShareKind.MASK_KEY):
                raise ProtocolError(f"client {sender} revealed the wrong kind of share of {owner}")
        return shares

    def _eligible(self) -> set[int] | tuple[int, ...]:
        if self._stage is _Stage.ADVERTISE:
            return set(self.ctx.clients)
        if self._stage in (_Stage.REVEAL, _Stage.SHARES):
            return set(self._keys)
        if self._stage is _Stage.INPUT:
            return set(self._shares)
        if self._stage is _Stage.UNMASK and self.config.consistency_check:
            return set(self._signatures)
        return set(self._survivors)

    # stage transitions
    def _close_advertise(self, received: dict) -> dict[int, bytes]:
        self._keys = dict(sorted(received.items()))
        self._require(len(self._keys), self.config.min_key_list(len(self.ctx.clients)), "advertised keys")
        self._key_list = msg.write_key_list(list(self._keys.values()))
        self._details.update(advertised=len(self._keys), degree=self._degree, threshold=self._threshold)
        if self.config.consistency_check:
            self._stage = _Stage.REVEAL
            return self._broadcast(self._keys, MessageKind.MASK_KEY_LIST, self._key_list)
        return self._fix_graph(self._key_list, msg.transcript_digest(self.ctx, self._key_list))

    def _close_reveal(self, received: dict) -> dict[int, bytes]:
        missing = sorted(set(self._keys) - set(received))
        if missing:  # the seed must not depend on whose reveal the server chose to keep
            raise AggregationAborted(f"clients {missing} did not reveal their graph-seed share: the SecAgg+ "
                                     f"graph cannot be fixed without every listed client's")
        body = msg.write_reveals(received)
        return self._fix_graph(body, msg.transcript_digest(self.ctx, self._key_list, body))

    def _fix_graph(self, body: bytes, transcript: bytes) -> dict[int, bytes]:
        """Fix T and the graph, and send the clients the message they derive them from."""
        self._transcript = transcript
        self._graph = neighbours(list(self._keys), self._degree, graph_seed(transcript))
        kind = MessageKind.MASK_REVEAL_LIST if self.config.consistency_check else MessageKind.MASK_KEY_LIST
        self._stage = _Stage.SHARES
        return self._broadcast(self._keys, kind, body)

    def _broadcast(self, clients: Iterable[int], kind: MessageKind, body: bytes) -> dict[int, bytes]:
        return {u: seal_envelope(self.ctx, SERVER_ID, kind, body) for u in clients}

    def _close_shares(self, received: dict) -> dict[int, bytes]:
        self._shares = dict(sorted(received.items()))
        self._require(len(self._shares), max(self._threshold + 1, 2), "sent their shares")
        relay: dict[int, list[tuple[int, bytes]]] = {v: [] for v in self._shares}
        for u, addressed in self._shares.items():
            for v, ciphertext in addressed.items():
                if v in relay:
                    relay[v].append((u, ciphertext))
        self._stage = _Stage.INPUT
        # a client with fewer than t partners would refuse to mask: leave it out now
        return {v: seal_envelope(self.ctx, SERVER_ID, MessageKind.MASK_SHARE_RELAY, msg.write_addressed(items))
                for v, items in relay.items() if len(items) >= self._threshold}

    def _close_input(self, received: dict) -> dict[int, bytes]:
        self._require(len(received), max(self._threshold, 2), "sent masked inputs")
        self._survivors = tuple(sorted(received))
        if self.config.consistency_check:
            self._stage = _Stage.CONSISTENCY
            body = msg.write_ids(self._survivors).to_bytes()
            kind = MessageKind.MASK_CONSISTENCY_REQUEST
        else:
            self._stage = _Stage.UNMASK
            body = msg.write_unmask_request(self._survivors, {})
            kind = MessageKind.MASK_UNMASK_REQUEST
        return self._broadcast(self._survivors, kind, body)

    def _close_consistency(self, received: dict) -> dict[int, bytes]:
        self._require(len(received), max(self._threshold, 2), "signed the survivor list")
        self._signatures = dict(received)
        for w in self._shares:  # clients reveal a share of w only after t of w's neighbours signed
            signed = len(self._graph[w] & set(self._signatures))
            if signed < self._threshold:
                raise AggregationAborted(f"only {signed} of client {w}'s neighbours signed the survivor list; "
                                         f"{self._threshold} needed")
        self._stage = _Stage.UNMASK
        body = msg.write_unmask_request(self._survivors, self._signatures)
        return {u: seal_envelope(self.ctx, SERVER_ID, MessageKind.MASK_UNMASK_REQUEST, body) for u in self._signatures}

    def _close_unmask(self, received: dict) -> dict[int, bytes]:
        self._require(len(received), max(self._threshold, 2), "revealed shares")
        by_owner: dict[int, list[shamir.Share]] = {v: [] for v in self._shares}
        for holder, shares in received.items():
            for owner, (_, data) in shares.items():
                by_owner[owner].append(shamir.Share(holder + 1, data))
        alive = set(self._survivors)
        dropped = [v for v in self._shares if v not in alive]
        secrets = self._reconstruct([*self._survivors, *dropped], by_owner)
        minus = [secrets[v] for v in self._survivors]  # self masks
        plus: list[bytes] = []
        for v in dropped:
            s_v = AgreementKey.from_private_bytes(secrets[v])
            if s_v.public_bytes() != self._keys[v].s_pk:
                raise AggregationAborted(f"shares of client {v}'s mask key are inconsistent")
            for u in sorted(self._graph[v] & alive):
                seed = s_v.derive(self._keys[u].s_pk, session=self.ctx.session, round=self.ctx.round, ids=(u, v),
                                  purpose=Purpose.PAIRWISE_MASK)
                # u added +PRG(s_uv) if u < v and -PRG(s_uv) otherwise: undo it
                (minus if u < v else plus).append(seed)
        pairwise = len(plus) + len(minus) - len(self._survivors)
        MaskExpander(self.encoder.length, self.encoder.dtype).apply(plus, minus, self._sum)
        self._details.update(survivors=len(self._survivors), dropped_after_sharing=len(dropped),
                             self_masks_removed=len(self._survivors), pairwise_masks_removed=pairwise)
        self._stage = _Stage.DONE
        return {}

    def _reconstruct(self, owners: list[int], by_owner: dict[int, list[shamir.Share]]) -> dict[int, bytes]:
        """Every owner's secret (self-mask seed or mask key), rebuilt in one batch."""
        for v in owners:
            if len(by_owner[v]) < self._threshold:
                raise AggregationAborted(f"{len(by_owner[v])} shares of client {v}'s secret, "
                                         f"{self._threshold} needed")
        try:
            return dict(zip(owners, shamir.reconstruct_many([by_owner[v] for v in owners], self._threshold)))
        except MessageError as err:
            raise AggregationAborted(f"cannot rebuild a client's secret: {err}") from None

    def _require(self, count: int, needed: int, what: str) -> None:
        needed = max(needed, self.ctx.min_clients)
        if count < needed:
            raise AggregationAborted(f"only {count} clients {what}; at least {needed} are needed")

    def _identity(self, client: int) -> bytes:
        try:
            return self.directory[client]
        except KeyError:
            raise ProtocolError(f"no identity key for client {client}") from None
