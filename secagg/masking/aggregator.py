"""The masking recipe: the :class:`~secagg.aggregation.Aggregator` users plug into the round loop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from secagg.aggregation import RoundContext
from secagg.encoding import FixedPointEncoder
from secagg.masking.client import MaskingClient
from secagg.masking.config import MaskingConfig
from secagg.masking.server import MaskingServer
from secagg.identity import IdentityRegistry


class MaskingAggregator:
    """Pairwise-masking secure aggregation (SecAgg+ by default; ``MaskingConfig(neighbors=0)`` for SecAgg).

    In-process, it also plays the public-key infrastructure of the consistency check: it enrols each client
    with a fresh Ed25519 identity key and publishes the directory of public identity keys to everyone.
    """

    def __init__(self, config: MaskingConfig | None = None) -> None:
        self.config = config or MaskingConfig()
        self.identities = IdentityRegistry()

    def with_noise(self, sigma: float) -> MaskingAggregator:
        """This aggregator (same identities) whose clients add N_Z(0, sigma^2) in ring units to their encodings."""
        twin = MaskingAggregator(replace(self.config, noise_sigma=sigma))
        twin.identities = self.identities
        return twin

    @property
    def stages(self) -> int:
        return self.config.stages

    def encoder(self, ctx: RoundContext) -> FixedPointEncoder:
        return self.config.encoder(ctx.dimension, len(ctx.clients))

    def client_session(self, ctx: RoundContext, client_id: int, update: np.ndarray, weight: float) -> MaskingClient:
        self.identities.enrol(ctx.clients)
        return MaskingClient(ctx, client_id, update, weight, self.config, self.encoder(ctx),
                             self.identities.signing_key(client_id), self.identities.directory)

    def resume_client_session(self, ctx: RoundContext, client_id: int, state: bytes) -> MaskingClient:
        """The session :meth:`client_session` opened and the client suspended between stages (its own bytes)."""
        return MaskingClient.resume(state, ctx, client_id, self.config, self.encoder(ctx),
                                    self.identities.signing_key(client_id), self.identities.directory)

    def server_session(self, ctx: RoundContext) -> MaskingServer:
        self.identities.enrol(ctx.clients)
        return MaskingServer(ctx, self.config, self.encoder(ctx), self.identities.directory)
