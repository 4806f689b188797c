"""The client side of pairwise-masking secure aggregation, as a sans-I/O state machine.

Stages (Bonawitz et al. 2017, section 4; SecAgg+ neighbourhoods of Bell et al. 2020):

0. ``start``: advertise two fresh X25519 public keys (share encryption c, masking s); with the consistency
   check also a commitment to a fresh random r, all signed with the client's identity key.
1. key list: check it (own keys, participants of this round only, signed and committed if required).
   With the consistency check, reveal r; the server must then send every listed client's reveal, each
   opening its commitment, so the graph seed is fixed by randomness the server saw only after the list.
2. set-up fixed: the transcript digest T (context, key list, reveals) seeds the neighbourhood; Shamir-share
   s_sk and a fresh self-mask seed b among the neighbours, encrypt each neighbour's shares with AES-GCM
   under a key agreed with it and T as associated data.
3. share relay: decrypt every relayed share now (a partner that saw another key list fails here) and
   refuse unless at least t neighbours' shares arrived; then send
   ``encode(x) + PRG(b) + sum_v sign(u, v) PRG(s_uv)`` (plus if u < v, minus if u > v).
4. (consistency check only) sign T and the survivor list.
5. unmask request: check the survivor list, then reveal for each neighbour either its b share (it
   survived) or its s_sk share (it dropped), never both; then refuse every later message.

Degree k and threshold t come from the number of sampled participants in the round context, so a server
that lists fewer clients cannot lower t; t must exceed k / 2 (:class:`MaskingConfig`).

A runtime that cannot keep the object alive between stages (a Flower ClientApp runs once per message)
stores :meth:`MaskingClient.suspend` in the client's own node state and rebuilds the session with
:meth:`MaskingClient.resume`. The suspended state holds the client's secrets: it never leaves the node.
"""

from __future__ import annotations

import enum
import os

import numpy as np

from secagg.aggregation import RoundContext
from secagg.encoding import FixedPointEncoder
from secagg.envelopes import open_envelope, seal_envelope
from secagg.errors import ProtocolError, SecAggError
from secagg.masking import messages as msg
from secagg.masking.config import MaskingConfig
from secagg.masking.graph import Ring, graph_seed
from secagg.masking.messages import Advertisement, ShareKind
from secagg.primitives import shamir
from secagg.primitives.aead import open_sealed, seal
from secagg.primitives.keys import AgreementKey, Purpose, SigningKey, verify_signature
from secagg.primitives.prg import SEED_BYTES, MaskExpander
from secagg.wire import SERVER_ID, BodyReader, BodyWriter, MessageKind


class _State(enum.Enum):
    NEW = 0
    ADVERTISED = 1
    SHARED = 2
    MASKED = 3
    SIGNED = 4
    DONE = 5
    REVEALED = 6


class MaskingClient:
    def __init__(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float, config: MaskingConfig,
                 encoder: FixedPointEncoder, identity: SigningKey | None, directory: dict[int, bytes]) -> None:
        self.ctx, self.id, self.config, self.encoder = ctx, client_id, config, encoder
        self.identity, self.directory = identity, directory
        if config.consistency_check and identity is None:
            raise ProtocolError("the consistency check needs an identity key")
        self._degree, self._threshold = config.round_plan(ctx.clients)
        self._encoded = encoder.encode(update, weight)
        self._c, self._s = AgreementKey.generate(), AgreementKey.generate()
        self._reveal = os.urandom(msg.REVEAL_BYTES) if config.consistency_check else b""
        self._state = _State.NEW
        self._key_list = b""
        self._transcript = b""
        self._advertised: frozenset[int] = frozenset()
        self._neighbours: frozenset[int] = frozenset()
        self._partners: dict[int, bytes] = {}  # decrypted share plaintexts of the partners, by owner
        self._pair_seeds: dict[int, bytes] = {}
        self._aead_keys: dict[int, bytes] = {}
        self._survivors: tuple[int, ...] = ()
        self._seed = b""

    def suspend(self) -> bytes:
        """The session's whole state (secrets included), for the client's own storage between stages."""
        w = BodyWriter().u8(self._state.value).raw(self._c.private_bytes()).raw(self._s.private_bytes())
        w.blob(self._reveal).blob(self._key_list).blob(self._transcript)
        for ids in (self._advertised, self._neighbours, self._survivors):
            w.raw(msg.write_ids(tuple(sorted(ids)) if isinstance(ids, frozenset) else ids).to_bytes())
        for table in (self._partners, self._pair_seeds, self._aead_keys):
            w.u32(len(table))
            for v, value in sorted(table.items()):
                w.u32(v).blob(value)
        w.blob(self._seed)
        return w.array(self._encoded).to_bytes()

    @classmethod
    def resume(cls, state: bytes, ctx: RoundContext, client_id: int, config: MaskingConfig,
               encoder: FixedPointEncoder, identity: SigningKey | None, directory: dict[int, bytes]) -> MaskingClient:
        """The session :meth:`suspend` saved; ``ctx`` and the settings must be the ones it was created with."""
        self = cls.__new__(cls)
        self.ctx, self.id, self.config, self.encoder = ctx, client_id, config, encoder
        self.identity, self.directory = identity, directory
        self._degree, self._threshold = config.round_plan(ctx.clients)
        r = BodyReader(state)
        try:
            self._state = _State(r.u8())
        except ValueError:
            raise ProtocolError("suspended masking session has an unknown state") from None
        self._c, self._s = AgreementKey.from_private_bytes(r.raw(32)), AgreementKey.from_private_bytes(r.raw(32))
        self._reveal, self._key_list = r.blob(max_len=msg.REVEAL_BYTES), r.blob()
        self._transcript = r.blob(max_len=msg.DIGEST_BYTES)
        self._advertised, self._neighbours = frozenset(msg.read_ids(r)), frozenset(msg.read_ids(r))
        self._survivors = msg.read_ids(r)
        self._partners, self._pair_seeds, self._aead_keys = ({r.u32(): r.blob() for _ in range(r.count(
            max_count=msg.MAX_PARTIES))} for _ in range(3))
        self._seed = r.blob(max_len=SEED_BYTES)
        length = 0 if self._state in (_State.MASKED, _State.SIGNED, _State.DONE) else encoder.length
        self._encoded = r.array(dtype=encoder.dtype, shape=(length,))
        r.finish()
        return self

    def start(self) -> bytes:
        self._expect(_State.NEW)
        c_pk, s_pk = self._c.public_bytes(), self._s.public_bytes()
        signature = commitment = b""
        if self.config.consistency_check:
            commitment = msg.commitment_of(self.ctx.session, self.ctx.round, self.id, self._reveal)
            signature = self.identity.sign(msg.advertisement_payload(self.ctx.session, self.ctx.round, self.id,
                                                                     c_pk, s_pk, commitment))
        self._state = _State.ADVERTISED
        body = msg.write_advertise(Advertisement(self.id, c_pk, s_pk, signature, commitment))
        return self._send(MessageKind.MASK_ADVERTISE, body)

    def handle(self, message: bytes) -> bytes:
        """Answer the server; any refusal ends this client's round, so it reveals nothing more."""
        try:
            return self._dispatch(message)
        except SecAggError:
            self._state = _State.DONE
            self._partners, self._pair_seeds, self._aead_keys = {}, {}, {}
            raise

    def _dispatch(self, message: bytes) -> bytes:
        if self._state is _State.ADVERTISED:
            return self._accept_key_list(message)
        if self._state is _State.REVEALED:
            return self._accept_reveals(message)
        if self._state is _State.SHARED:
            return self._masked_input(message)
        if self._state is _State.MASKED and self.config.consistency_check:
            return self._sign_survivors(message)
        if self._state in (_State.MASKED, _State.SIGNED):
            return self._unmask(message)
        raise ProtocolError(f"client {self.id} expects no message in state {self._state.name}")

    # stage 1
    def _accept_key_list(self, message: bytes) -> bytes:
        body = self._receive(message, MessageKind.MASK_KEY_LIST)
        keys = msg.KeyList(body)
        if not set(keys.ids) <= set(self.ctx.clients):
            raise ProtocolError("key list names clients outside this round")
        own = keys[self.id] if self.id in keys else None
        if own is None or (own.c_pk, own.s_pk) != (self._c.public_bytes(), self._s.public_bytes()):
            raise ProtocolError("key list does not carry this client's own keys")
        if keys.signed != self.config.consistency_check:
            raise ProtocolError("key list is signed" if keys.signed else "key list carries no signatures")
        if len(set(keys.public_keys())) != 2 * len(keys):
            raise ProtocolError("key list repeats a public key")
        needed = self.config.min_key_list(len(self.ctx.clients), self.ctx.min_clients)
        if len(keys) < needed:
            raise ProtocolError(f"only {len(keys)} clients advertised keys: below the threshold and quorum of "
                                f"{needed} of the {len(self.ctx.clients)} participants")
        self._key_list, self._advertised = body, frozenset(keys.ids)
        if not self.config.consistency_check:
            return self._share_keys(keys, msg.transcript_digest(self.ctx, body))
        if own.commitment != msg.commitment_of(self.ctx.session, self.ctx.round, self.id, self._reveal):
            raise ProtocolError("key list does not carry this client's own commitment")
        self._state = _State.REVEALED
        return self._send(MessageKind.MASK_REVEAL, self._reveal)

    # stage 1b (consistency check): every reveal opens its commitment, then the set-up is fixed
    def _accept_reveals(self, message: bytes) -> bytes:
        body = self._receive(message, MessageKind.MASK_REVEAL_LIST)
        reveals = msg.read_reveals(body)
        keys = msg.KeyList(self._key_list)
        if list(reveals) != keys.ids:
            raise ProtocolError("reveal list does not cover exactly the clients of the key list")
        for (v, reveal), commitment in zip(reveals.items(), keys.commitments()):
            if msg.commitment_of(self.ctx.session, self.ctx.round, v, reveal) != commitment:
                raise ProtocolError(f"client {v}'s reveal does not open its commitment")
        return self._share_keys(keys, msg.transcript_digest(self.ctx, self._key_list, body))

    def _share_keys(self, keys: msg.KeyList, transcript: bytes) -> bytes:
        self._transcript = transcript
        self._neighbours = self._graph(keys).neighbours(self.id)
        ads = {v: keys[v] for v in self._neighbours}
        if self.config.consistency_check:
            for v, ad in ads.items():
                verify_signature(self._identity_of(v), ad.signature, msg.advertisement_payload(
                    self.ctx.session, self.ctx.round, v, ad.c_pk, ad.s_pk, ad.commitment))
        # pairwise seeds are agreed now, off the masking step's critical path
        self._pair_seeds = {v: self._agree(self._s, ads[v].s_pk, v, Purpose.PAIRWISE_MASK) for v in self._neighbours}
        self._aead_keys = {v: self._agree(self._c, ads[v].c_pk, v, Purpose.SHARE_ENCRYPTION) for v in self._neighbours}
        self._seed = os.urandom(SEED_BYTES)
        order = sorted(self._neighbours)
        xs = [v + 1 for v in order]
        key_shares = shamir.split(self._s.private_bytes(), self._threshold, xs)
        seed_shares = shamir.split(self._seed, self._threshold, xs)
        out = []
        for v, ks, ss in zip(order, key_shares, seed_shares):
            plaintext = msg.pack_share_plaintext(self.id, v, ks.data, ss.data)
            out.append((v, seal(self._aead_keys[v], plaintext, self._share_ad(self.id, v))))
        self._state = _State.SHARED
        return self._send(MessageKind.MASK_SHARES, msg.write_addressed(out))

    # stage 2
    def _masked_input(self, message: bytes) -> bytes:
        relay = msg.read_addressed(self._receive(message, MessageKind.MASK_SHARE_RELAY))
        if not set(relay) <= self._neighbours:
            raise ProtocolError("share relay carries shares from clients that are not neighbours")
        if len(relay) < self._threshold:
            raise ProtocolError(f"shares of only {len(relay)} neighbours were relayed; masking with fewer than "
                                f"t={self._threshold} partners could expose this client's input")
        # a share that does not decrypt was made under another transcript (a split view) or forged
        self._partners = {v: open_sealed(self._aead_keys[v], c, self._share_ad(v, self.id))
                          for v, c in sorted(relay.items())}
        for v, plaintext in self._partners.items():
            msg.unpack_share_plaintext(plaintext, v, self.id)
        masked = self._encoded
        plus = [self._seed] + [self._pair_seeds[v] for v in sorted(relay) if self.id < v]
        minus = [self._pair_seeds[v] for v in sorted(relay) if self.id > v]
        MaskExpander(self.encoder.length, self.encoder.dtype).apply(plus, minus, masked)
        self._state = _State.MASKED
        self._pair_seeds, self._aead_keys = {}, {}
        body = BodyWriter().array(masked).to_bytes()
        self._encoded = np.empty(0, dtype=self.encoder.dtype)
        return self._send(MessageKind.MASK_INPUT, body)

    # stage 3 (consistency check)
    def _sign_survivors(self, message: bytes) -> bytes:
        reader = BodyReader(self._receive(message, MessageKind.MASK_CONSISTENCY_REQUEST))
        survivors = msg.read_ids(reader)
        reader.finish()
        self._check_survivors(survivors)
        self._survivors = survivors
        self._state = _State.SIGNED
        signature = self.identity.sign(msg.survivors_payload(self._transcript, survivors))
        return self._send(MessageKind.MASK_CONSISTENCY_SIGNATURE, signature)

    # stage 4
    def _unmask(self, message: bytes) -> bytes:
        survivors, signatures = msg.read_unmask_request(self._receive(message, MessageKind.MASK_UNMASK_REQUEST))
        self._check_survivors(survivors)
        if self.config.consistency_check:
            if survivors != self._survivors:
                raise ProtocolError("unmask request names other survivors than the ones signed")
            if not set(signatures) <= set(survivors):
                raise ProtocolError("consistency signatures from clients that are not survivors")
            self._check_agreement(signatures)
        alive = set(survivors)
        out = []
        for v, plaintext in sorted(self._partners.items()):
            key_share, seed_share = msg.unpack_share_plaintext(plaintext, v, self.id)
            if v in alive:
                out.append((v, ShareKind.SELF_MASK_SEED, seed_share))
            else:
                out.append((v, ShareKind.MASK_KEY, key_share))
        self._state = _State.DONE
        self._partners = {}
        return self._send(MessageKind.MASK_UNMASK_SHARES, msg.write_unmask_shares(out))

    def _check_agreement(self, signatures: dict[int, bytes]) -> None:
        """Before revealing a share of partner w, t of w's own neighbours must have signed this survivor list.

        Each honest client signs one list, so two lists that disagree about w would need 2t signers among
        w's k neighbours, which 2t > k + c rules out: every share of w the server obtains is of one kind.
        (Counting signers anywhere in the round would let a server certify disjoint lists with disjoint
        groups of t signers.)"""
        graph = self._graph(msg.KeyList(self._key_list))
        payload = msg.survivors_payload(self._transcript, self._survivors)
        valid: dict[int, bool] = {}
        for w in sorted(self._partners):
            signers = sorted(graph.neighbours(w) & signatures.keys())[:self._threshold]
            for v in signers:
                if v not in valid:
                    verify_signature(self._identity_of(v), signatures[v], payload)
                    valid[v] = True
            count = len(signers)
            if count < self._threshold:
                raise ProtocolError(f"only {count} of client {w}'s neighbours signed the survivor list; "
                                    f"t={self._threshold} needed before revealing its share")

    def _graph(self, keys: msg.KeyList) -> Ring:
        return Ring(keys.ids, self._degree, graph_seed(self._transcript))

    def _check_survivors(self, survivors: tuple[int, ...]) -> None:
        alive = set(survivors)
        if self.id not in alive:
            raise ProtocolError("survivor list leaves out this client")
        if len(survivors) < max(self.ctx.min_clients, self._threshold):
            raise ProtocolError(f"survivor list of {len(survivors)} is below the threshold")
        if not alive <= self._advertised:
            raise ProtocolError("survivor list names clients that never advertised keys")
        if (alive & self._neighbours) - set(self._partners):
            raise ProtocolError("survivor list names neighbours whose shares were never relayed")

    def _identity_of(self, client: int) -> bytes:
        try:
            return self.directory[client]
        except KeyError:
            raise ProtocolError(f"no identity key for client {client}") from None

    def _agree(self, key: AgreementKey, peer_public: bytes, peer: int, purpose: Purpose) -> bytes:
        return key.derive(peer_public, session=self.ctx.session, round=self.ctx.round, ids=(self.id, peer),
                          purpose=purpose)

    def _share_ad(self, owner: int, holder: int) -> bytes:
        return msg.share_associated_data(self._transcript, owner, holder)

    def _expect(self, state: _State) -> None:
        if self._state is not state:
            raise ProtocolError(f"client {self.id} is in state {self._state.name}, not {state.name}")

    def _receive(self, message: bytes, kind: MessageKind) -> bytes:
        return open_envelope(self.ctx, message, kind, sender=SERVER_ID)

    def _send(self, kind: MessageKind, body: bytes) -> bytes:
        return seal_envelope(self.ctx, self.id, kind, body)
