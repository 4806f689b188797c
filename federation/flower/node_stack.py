"""A client node's side of a run, and the limits it keeps on what the server may ask of it: the noise multiplier
it checked at enrolment, the stack it builds from its pinned enrolment (as the server built its own), the
batches per epoch it reported, and the rounds it trained (each at most once, in order)."""

from __future__ import annotations

from dataclasses import replace

from flwr.app import Context, Message

from federation import protection
from federation.calibration import check_noise_multiplier
from federation.client import FederatedClient
from federation.config import CKKS, DPSGD
from federation.errors import ConfigError
from federation.flower.codec import field
from federation.flower.enrolment import (pinned_directory, pinned_noise_multiplier, pinned_public_key,
                                         pinned_weight_bound)
from federation.flower.job import FlowerJob
from federation.flower.live import LIVE
from federation.flower.node import NodeState
from secagg.errors import ProtocolError
from secagg.identity import IdentityRegistry


def checked_noise_multiplier(message: Message, job: FlowerJob, node: NodeState,
                             client: FederatedClient | None) -> float | None:
    """The noise multiplier the enrolment announces, once this node checked it against the run's privacy
    settings (:func:`federation.calibration.check_noise_multiplier`): a client never trains or noises with
    less noise than its own settings require. ``client``: None on the key holder. None without DP."""
    dp = job.config.privacy_mode()
    if dp is None:
        return None
    z = field(message, "noise_multiplier", float)
    if client is None:
        batches = 1  # it trains nothing: under DP-SGD it does not use z, under distributed DP z sizes the share
        if isinstance(dp, DPSGD):
            return z
    else:
        batches = same_batches(node, client)
        if isinstance(dp, DPSGD):  # a model Opacus cannot train privately is refused now, not every round
            from dp.dpsgd import check_model

            check_model(client.model)
    check_noise_multiplier(dp, job.config.population(), z, batches)
    return z


def same_batches(node: NodeState, client: FederatedClient) -> int:
    """This client's batches per epoch, as it reported them at the greeting: the server accounts its DP-SGD,
    and the node checks the noise multiplier, by that count. Data that changed since (a client rebuilt at every
    message, its data loaded again) would sample at another rate: refused (:class:`ConfigError`)."""
    stored, batches = node.get("batches"), len(client.loader)
    if stored is not None and int.from_bytes(stored, "big") != batches:
        raise ConfigError(f"this client has {batches} batches per epoch now but reported "
                          f"{int.from_bytes(stored, 'big')} at the greeting: its data changed during the run")
    return batches


def node_stack(job: FlowerJob, index: int, node: NodeState, context: Context) -> protection.Stack:
    """This client's side of the run's stack (protection mode, client-level DP), made as the server made its
    own, from the pinned enrolment: the identity directory with this node's key, the weight bound, the CKKS
    public key and the checked noise multiplier. Kept for the run in a long-lived process."""
    cache = LIVE.run(context)
    if cache is not None and cache.stack is not None:
        return cache.stack
    config, secure = job.config, job.config.protection()
    dp = config.privacy_mode()
    if dp is not None:  # the checked, pinned multiplier: never calibrated again on the node
        dp = replace(dp, noise_multiplier=pinned_noise_multiplier(node), target_epsilon=None)
    identities = IdentityRegistry.pinned(pinned_directory(node), (index, node.identity()))
    public_key = pinned_public_key(node) if isinstance(secure, CKKS) else None
    parties = protection.RemoteParties(identities, pinned_weight_bound(node), None, public_key)
    stack = protection.build(secure, dp, config.population(), parties=parties)
    if cache is not None:
        cache.stack = stack
    return stack


def claim_round(node: NodeState, round_index: int, rounds: int) -> None:
    """Train each of the run's rounds at most once, in order: every train message spends this client's privacy
    (DP-SGD, a noise share) and the noise multiplier it checked covers ``rounds`` rounds, so a server that
    replays a round, reorders rounds or goes on past the last one is refused (:class:`ProtocolError`). The
    round is claimed before training (a refused or failed round is not trained again); a resumed run is a new
    Flower run with a fresh node state."""
    stored = node.get("trained_round")
    last = 0 if stored is None else int.from_bytes(stored, "big")
    if not 1 <= round_index <= rounds:
        raise ProtocolError(f"round {round_index} is outside this run's rounds 1..{rounds}")
    if round_index <= last:
        raise ProtocolError(f"round {round_index} again or out of order: this node already trained round {last}")
    node.put("trained_round", round_index.to_bytes(4, "big"))
