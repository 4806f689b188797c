"""Strategies: FedAvg, FedProx, and the server optimizers of Reddi et al. 2021 (FedAdam, FedYogi, FedAvgM).

A server optimizer sees only the aggregated (weighted mean) delta, never an individual update, so every
strategy works unchanged behind any aggregator, secure or not. The mean delta is used as a pseudo-gradient
``-delta``; FedAvg with server learning rate 1 is plain model averaging.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from federation.errors import ConfigError


class StrategyName(enum.Enum):
    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDAVGM = "fedavgm"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"


_DEFAULT_SERVER_LR = {
    StrategyName.FEDAVG: 1.0,
    StrategyName.FEDPROX: 1.0,
    StrategyName.FEDAVGM: 1.0,
    StrategyName.FEDADAM: 0.01,
    StrategyName.FEDYOGI: 0.01,
}


@dataclass(frozen=True)
class Strategy:
    """A strategy's hyperparameters. ``server_lr=None`` takes the strategy's default."""

    name: StrategyName = StrategyName.FEDAVG
    server_lr: float | None = None
    proximal_mu: float = 0.01
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        if self.server_lr is not None and not self.server_lr > 0:
            raise ConfigError(f"server learning rate must be positive, got {self.server_lr}")
        if self.proximal_mu < 0:
            raise ConfigError(f"proximal mu must be non-negative, got {self.proximal_mu}")
        for name in ("momentum", "beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not self.tau > 0:
            raise ConfigError(f"tau must be positive, got {self.tau}")

    @property
    def learning_rate(self) -> float:
        return self.server_lr if self.server_lr is not None else _DEFAULT_SERVER_LR[self.name]

    @property
    def client_proximal_mu(self) -> float:
        """The FedProx term clients add; zero for every other strategy."""
        return self.proximal_mu if self.name is StrategyName.FEDPROX else 0.0


class ServerOptimizer:
    """Applies the aggregated delta to the global model; its state is a dict of arrays (checkpointed)."""

    def __init__(self, strategy: Strategy, dimension: int) -> None:
        self.strategy = strategy
        self.state: dict[str, np.ndarray] = {}
        if strategy.name is StrategyName.FEDAVGM:
            self.state["velocity"] = np.zeros(dimension, dtype=np.float64)
        elif strategy.name in (StrategyName.FEDADAM, StrategyName.FEDYOGI):
            self.state["m"] = np.zeros(dimension, dtype=np.float64)
            self.state["v"] = np.full(dimension, strategy.tau**2, dtype=np.float64)

    def step(self, params: np.ndarray, mean_delta: np.ndarray) -> np.ndarray:
        """The new global parameters (float32)."""
        s, lr = self.strategy, self.strategy.learning_rate
        delta = mean_delta.astype(np.float64)
        if s.name is StrategyName.FEDAVGM:
            v = self.state["velocity"]
            v *= s.momentum
            v += delta
            update = lr * v
        elif s.name in (StrategyName.FEDADAM, StrategyName.FEDYOGI):
            m, v = self.state["m"], self.state["v"]
            m *= s.beta1
            m += (1.0 - s.beta1) * delta
            sq = delta * delta
            if s.name is StrategyName.FEDADAM:
                v *= s.beta2
                v += (1.0 - s.beta2) * sq
            else:
                v -= (1.0 - s.beta2) * sq * np.sign(v - sq)
            update = lr * m / (np.sqrt(v) + s.tau)
        else:
            update = lr * delta
        return (params.astype(np.float64) + update).astype(np.float32)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if set(state) != set(self.state):
            raise ConfigError(f"optimizer state has keys {sorted(state)}, expected {sorted(self.state)}")
        for key, value in state.items():
            if value.shape != self.state[key].shape:
                raise ConfigError(f"optimizer state {key!r} has shape {value.shape}, expected {self.state[key].shape}")
            self.state[key] = value.astype(np.float64).copy()
