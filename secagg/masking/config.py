"""Settings of pairwise-masking secure aggregation (SecAgg / SecAgg+)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from secagg.encoding import FixedPointEncoder
from secagg.errors import ConfigurationError
from secagg.primitives import shamir


@dataclass(frozen=True)
class MaskingConfig:
    """How clients encode and mask their updates, and how much dropout a round survives.

    ``neighbors``: the degree k of the SecAgg+ graph; ``None`` takes about 2*log2(n) (rounded up to even);
    ``0`` (or any k >= n - 1) is the complete graph, i.e. classic SecAgg (Bonawitz et al. 2017).
    ``threshold``: Shamir threshold t; an int is absolute, a float in [0.5, 1] a fraction of the
    neighbourhood (t = floor(fraction * k) + 1, at most k). Each client's secrets can be rebuilt from any t
    of its neighbours and not from t - 1. t must exceed k / 2: each honest neighbour reveals one of a
    client's two secrets, so a server (with c colluding neighbours) can hold t shares of both only if
    2t <= k + c. Degree and threshold come from the round's participant list, never from what a server relays.
    ``consistency_check``: the active-adversary variant: advertised keys (with a commitment to the
    client's share of the graph seed) and the survivor list are signed with Ed25519 identity keys and
    checked by every client before it reveals a share; the SecAgg+ graph seed is fixed by a commit-reveal
    stage the server cannot steer.
    ``quorum``: a key list must name more than this fraction of the round's sampled participants (a strict
    majority by default), so a server cannot run one round as several sub-rounds of its choosing (a small
    sub-round is a complete graph whose members the server picked); it bounds dropouts before the keys.
    ``clip``, ``precision_bits``, ``max_weight``: the fixed-point encoding (see :mod:`secagg.encoding`).
    ``noise_sigma``: discrete Gaussian noise each client adds to its encoding, in ring units (quantization
    steps); 0 adds none. Distributed DP sets it (:mod:`dp.clipping`); the protocol is otherwise unchanged.
    """

    neighbors: int | None = None
    threshold: int | float = 0.5
    consistency_check: bool = False
    clip: float = 1.0
    precision_bits: int = 20
    max_weight: float = 1.0
    noise_sigma: float = 0.0
    quorum: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.quorum, bool) or not 0.5 <= self.quorum < 1.0:
            raise ConfigurationError(f"quorum must be in [0.5, 1), got {self.quorum}")
        if self.neighbors is not None and self.neighbors < 0:
            raise ConfigurationError(f"neighbors must be non-negative, got {self.neighbors}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise ConfigurationError(f"threshold must be an int or a float, got {self.threshold!r}")
        if isinstance(self.threshold, int) and self.threshold < 1:
            raise ConfigurationError(f"an absolute threshold must be at least 1, got {self.threshold}")
        if isinstance(self.threshold, float) and not 0.5 <= self.threshold <= 1.0:
            raise ConfigurationError(f"a threshold fraction must be in [0.5, 1] (t above half the neighbours), "
                                     f"got {self.threshold}")
        self.encoder(1, 1)  # validates the encoding

    def encoder(self, dimension: int, clients: int) -> FixedPointEncoder:
        """The encoding for ``clients`` summands; refuses a configuration whose sum could wrap."""
        return FixedPointEncoder(dimension, clients, self.clip, self.precision_bits, self.max_weight,
                                 self.noise_sigma)

    def degree(self, n: int) -> int:
        """The number of neighbours each of ``n`` clients has."""
        if n < 2:
            raise ConfigurationError(f"secure aggregation needs at least 2 clients, got {n}")
        k = self.neighbors
        if k is None:
            k = 2 * math.ceil(math.log2(n))
        if k == 0 or k >= n - 1:
            return n - 1
        return k + (k % 2)  # Harary graphs of even degree

    @property
    def stages(self) -> int:
        """Client uploads per round: advertise, (reveal,) shares, input, (consistency signature,) unmask."""
        return 6 if self.consistency_check else 4

    def shamir_threshold(self, degree: int) -> int:
        """t for ``degree`` neighbours; refuses t above the degree or at or below half of it."""
        if isinstance(self.threshold, float):
            return min(degree, math.floor(self.threshold * degree) + 1)
        if self.threshold > degree:
            raise ConfigurationError(f"threshold {self.threshold} exceeds the {degree} neighbours of each client")
        if 2 * self.threshold <= degree:
            raise ConfigurationError(f"threshold {self.threshold} is at or below half of the {degree} neighbours: "
                                     f"a server that splits survivor views could rebuild both secrets of a client")
        return self.threshold

    def plan(self, participants: int) -> tuple[int, int]:
        """(degree k, threshold t) of a round with ``participants`` sampled clients."""
        degree = self.degree(max(participants, 2))
        return degree, self.shamir_threshold(degree)

    def round_plan(self, clients: tuple[int, ...]) -> tuple[int, int]:
        """(k, t) for a round's sampled ``clients``, after checking each id can be a Shamir point (id + 1)."""
        if clients and max(clients) + 1 >= shamir.PRIME:
            raise ConfigurationError(f"client id {max(clients)} is too large for masking: ids must be below "
                                     f"{shamir.PRIME - 1}")
        return self.plan(len(clients))

    def min_key_list(self, participants: int, min_clients: int = 1) -> int:
        """The fewest clients a key list of a round with ``participants`` sampled clients may name."""
        _, t = self.plan(participants)
        return max(math.floor(self.quorum * participants) + 1, t + 1, min_clients, 2)
