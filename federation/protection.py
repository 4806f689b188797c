"""The one place that turns a protection mode and a DP mode into an aggregator stack.

Everything that depends on the clients comes from :class:`Population` (the registered clients): the public
bound on a client's weight, the fixed-point ring, the masking graph of a round, the fewest contributions a
release needs, and the noise multiplier that reaches a target epsilon. :func:`check` refuses, before any
training, a combination that cannot run; :func:`build` makes the stack. The in-process federation, the CLI,
the benchmarks and the Flower apps all call these.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from federation.calibration import noise_multiplier
from federation.config import CKKS, DPSGD, CentralDP, DistributedDP, Masking, Privacy, Protection
from federation.errors import ConfigError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from dp.dpsgd import DPSGDConfig
    from dp.events import PrivacyEvent
    from secagg.aggregation import Aggregator
    from secagg.ckks import CKKSParams
    from secagg.ckks.protocol import KeyHolderPort
    from secagg.identity import IdentityRegistry
    from secagg.masking import MaskingConfig


@dataclass(frozen=True)
class Population:
    """The registered clients as the stack sees them: each one's example count and batches per local epoch,
    the clients sampled per round, the fewest contributions to release a round, and the run's length."""

    examples: tuple[int, ...]
    batches: tuple[int, ...]
    per_round: int
    min_clients: int = 1
    rounds: int = 1
    local_epochs: int = 1
    sampling_rate: float | None = None  # Poisson client sampling's q; None: fixed-size sampling

    @property
    def clients(self) -> int:
        return len(self.examples)


@dataclass(frozen=True)
class RemoteParties:
    """The other parties of a deployment as one party knows them: the identity ``identities`` (the server: every
    client's public key; a client: the pinned directory and its own signing key, see
    :meth:`IdentityRegistry.pinned`), the run's public ``weight_bound``, and with CKKS the key holder's signed
    ``public_key`` and, on the server, the ``key_holder`` it reaches."""

    identities: IdentityRegistry
    weight_bound: float
    key_holder: KeyHolderPort | None = None
    public_key: bytes | None = None


def client_level(dp: Privacy) -> bool:
    return isinstance(dp, (CentralDP, DistributedDP))


def weight_bound(dp: Privacy, examples: tuple[int, ...] | list[int]) -> float:
    """The public bound on one client's weight: its example count, or 1 under client-level DP (every client
    weighs the same, so one client's influence is bounded by the clip)."""
    return 1.0 if client_level(dp) else float(max(examples))


def min_contributions(min_clients: int) -> int:
    """Never release an aggregate of fewer than two (or ``min_clients``) contributions: the CKKS key holder's
    policy, and the floor of distributed DP's noise shares."""
    return max(2, min_clients)


def masking_config(secure: Masking, bound: float) -> MaskingConfig:
    from secagg.masking import MaskingConfig

    return MaskingConfig(neighbors=secure.neighbors, threshold=secure.threshold,
                         consistency_check=secure.consistency_check, clip=secure.clip,
                         precision_bits=secure.precision_bits, max_weight=bound, quorum=secure.quorum)


def ckks_params(secure: CKKS, bound: float, clients: int, noise_sigma: float = 0.0) -> CKKSParams:
    """The CKKS parameters for sums of at most ``clients`` contributions of weight at most ``bound``: q0, the
    scale and the compression of uploads are derived from these (:class:`secagg.ckks.CKKSParams`), so every
    party of a run must pass the same values. ``noise_sigma``: distributed DP's noise share, added by each
    client after its clip (never clipped)."""
    from secagg.ckks import CKKSParams

    return CKKSParams(clip=secure.clip, max_weight=bound, noise_sigma=noise_sigma, max_clients=max(2, clients))


def check(secure: Protection, dp: Privacy, population: Population) -> None:
    """Refuse, before anyone trains, what this population cannot run under ``secure`` and ``dp``."""
    from secagg.errors import SecAggError

    if population.sampling_rate is not None and client_level(dp) and (
            isinstance(dp, DistributedDP) or dp.adaptive_quantile is not None or secure is not None  # type: ignore[union-attr]
            or population.min_clients > 1):
        raise ConfigError(
            "Poisson client sampling is accounted for CentralDP on the plaintext path (secure=None, min_clients=1, "
            "no adaptive clipping) only: a round's output must not depend on how many clients were drawn, but a "
            "secure sum or min_clients aborts a round of too few, and the next client's presence would release "
            "all of them at once (under add/remove neighbours distributed noise shares also change with the "
            "participants). Use fixed-size sampling, accounted for replace-with-zero neighbours")
    if isinstance(dp, DistributedDP) and secure is None:
        raise ConfigError("DistributedDP needs secure=Masking() or CKKS(): without secure aggregation the server "
                          "sees each client's noised update, so the noise shares protect nothing")
    if isinstance(dp, CentralDP) and dp.adaptive_quantile is not None and secure is not None and secure.clip < 0.5:
        raise ConfigError("adaptive clipping sends each client's bit as +-0.5: the encoding clip must be >= 0.5")
    bound, needed = weight_bound(dp, population.examples), 0
    try:
        if isinstance(secure, Masking):
            config = masking_config(secure, bound)
            config.encoder(1, population.clients)  # a ring too small for this many clients
            config.plan(population.per_round)  # degree and threshold of a round
            needed = config.min_key_list(population.per_round, population.min_clients)
        elif isinstance(secure, CKKS):
            ckks_params(secure, bound, population.per_round).check_clients(population.per_round)
            needed = min_contributions(population.min_clients)
    except SecAggError as err:
        raise ConfigError(f"{type(secure).__name__}: {err}") from None
    if population.per_round < needed:
        raise ConfigError(f"{type(secure).__name__} needs at least {needed} clients per round (a secure sum of "
                          f"fewer would reveal them, given min_clients={population.min_clients}), but "
                          f"{population.per_round} are sampled")
    if isinstance(dp, DistributedDP) and population.per_round < min_contributions(population.min_clients):
        raise ConfigError(f"DistributedDP needs at least {min_contributions(population.min_clients)} clients per "
                          f"round (each adds a share of the noise), got {population.per_round}")


def check_explicit(aggregator: Aggregator, dp: Privacy, population: Population) -> None:
    """An aggregator passed in explicitly must accept every registered client's weight: refused here, before
    training, rather than every client being rejected in every round."""
    bound = getattr(getattr(aggregator, "config", None), "max_weight", None)
    bound = getattr(getattr(aggregator, "params", None), "max_weight", bound)
    bound = getattr(aggregator, "max_weight", bound)
    needed = weight_bound(dp, population.examples)
    if bound is not None and needed > bound:
        raise ConfigError(f"{type(aggregator).__name__} accepts client weights up to {bound}, but a client has "
                          f"{needed:g} examples: pass secure=Masking() or CKKS() so the bound is derived from the "
                          f"clients, or make the aggregator with max_weight >= {needed:g}")


def noise_share(secure: Protection, dp: Privacy, population: Population, z: float | None) -> float:
    """The Gaussian noise share each CKKS client adds after its clip under distributed DP (0 otherwise): the
    key holder's parameters depend on it too."""
    if not (isinstance(dp, DistributedDP) and isinstance(secure, CKKS)) or z is None:
        return 0.0
    return z * dp.clip / math.sqrt(min_contributions(population.min_clients))


@dataclass(frozen=True)
class Stack:
    """What a federation runs with: the server's aggregator (client-level DP wrapped around the protection
    mode), the DP-SGD settings its clients train with, and the client-level events a round will emit."""

    aggregator: Aggregator
    dp_sgd: DPSGDConfig | None = None
    planned_population: tuple[PrivacyEvent, ...] = ()
    noise_multiplier: float | None = None


def protection_aggregator(secure: Protection, bound: float, min_clients: int, noise_sigma: float = 0.0, *,
                          clients: int, parties: RemoteParties | None = None) -> Aggregator:
    """The protection mode alone, for clients whose weight is at most ``bound``, at most ``clients`` of them per
    round; ``noise_sigma``: CKKS clients' distributed-DP noise share (masking puts its own on the ring).

    All parties in this process, unless ``parties`` (a distributed runtime): then the server's side (sessions for
    every client) or a client's (its own sessions), with the parties' own identity keys and, with CKKS, the key
    holder as another party (reached by the server through ``parties.key_holder``)."""
    from secagg.ckks import CKKSAggregator
    from secagg.masking import MaskingAggregator
    from secagg.plaintext import PlaintextAggregator

    if isinstance(secure, Masking):
        aggregator = MaskingAggregator(masking_config(secure, bound))
        if parties is not None:
            aggregator.identities = parties.identities
        return aggregator
    if isinstance(secure, CKKS):
        params = ckks_params(secure, bound, clients, noise_sigma)
        if parties is None:
            return CKKSAggregator(params, min_clients=min_contributions(min_clients))
        if parties.public_key is None:
            raise ConfigError("CKKS with remote parties needs the key holder's public key")
        return CKKSAggregator.with_key_holder(params, parties.key_holder, parties.public_key, parties.identities)
    return PlaintextAggregator(max_weight=bound)


def build(secure: Protection, dp: Privacy, population: Population, inner: Aggregator | None = None, *,
          parties: RemoteParties | None = None) -> Stack:
    """Check, then stack: ``inner`` (default :func:`protection_aggregator`, for ``parties`` in other processes
    if given) under client-level DP if any."""
    from dp.clipping import ClientLevelDP, ClientLevelDPAggregator, ClientLevelMode
    from dp.dpsgd import DPSGDConfig
    from dp.errors import InvalidPrivacyParameter
    from dp.events import GaussianEvent, Neighbouring, PoissonSampledGaussianEvent, PrivacyEvent, Unit

    check(secure, dp, population)
    z = noise_multiplier(dp, population) if dp is not None else None
    if inner is None:
        sigma = noise_share(secure, dp, population, z)
        bound = parties.weight_bound if parties is not None else weight_bound(dp, population.examples)
        inner = protection_aggregator(secure, bound, population.min_clients, sigma, clients=population.per_round,
                                      parties=parties)
    if dp is None or z is None:
        return Stack(inner)
    try:
        if isinstance(dp, DPSGD):
            return Stack(inner, DPSGDConfig(z, dp.max_grad_norm, dp.secure_mode), (), z)
        adaptive = None
        if isinstance(dp, CentralDP) and dp.adaptive_quantile is not None:
            from dp.adaptive import AdaptiveClipping

            count_noise = max(z, population.per_round / 20) if dp.count_noise is None else dp.count_noise
            adaptive = AdaptiveClipping(dp.adaptive_quantile, count_noise, dp.clip_learning_rate)
        mode = ClientLevelMode.CENTRAL if isinstance(dp, CentralDP) else ClientLevelMode.DISTRIBUTED
        q = population.sampling_rate
        shares = min_contributions(population.min_clients)
        if isinstance(dp, DistributedDP) and population.per_round >= 4 * shares:
            log.warning("DistributedDP: each client's noise share is sized so that %d survivors carry the target "
                        "noise; the %d clients of a round add sqrt(%d/%d) = %.1fx that (more privacy, less "
                        "accuracy): set min_clients near the survivors you expect per round", shares,
                        population.per_round, population.per_round, shares, math.sqrt(population.per_round / shares))
        level = ClientLevelDP(z, dp.clip, mode, shares, adaptive, q,
                              None if q is None else q * population.clients,
                              isinstance(dp, CentralDP) and dp.secure_mode)
    except InvalidPrivacyParameter as err:
        raise ConfigError(str(err)) from None
    planned: PrivacyEvent = GaussianEvent(z) if q is None else PoissonSampledGaussianEvent(
        z, q, unit=Unit.CLIENT, relation=Neighbouring.ADD_REMOVE)
    return Stack(ClientLevelDPAggregator(inner, level), None, (planned,), z)
