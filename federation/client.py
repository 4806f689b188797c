"""A federated client around the user's own model, optimizer, DataLoader and training function.

The user's training function keeps its signature ``train_fn(model, loader, optimizer)`` and is called once
per local epoch. It may return the epoch's mean loss, which is then reported as a per-client metric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dp.dpsgd import DPSGDConfig, PrivateTraining
from dp.events import PrivacyEvent
from federation.errors import ConfigError
from federation.params import get_vector, set_vector, trainable

TrainFn = Callable[[nn.Module, DataLoader, torch.optim.Optimizer], Optional[float]]


@dataclass(frozen=True)
class LocalResult:
    """One client's local training outcome: the update (local minus global) and its metrics."""

    delta: np.ndarray
    num_examples: int
    train_loss: float | None
    seconds: float
    events: tuple[PrivacyEvent, ...] = ()


class FederatedClient:
    """Runs the user's training code on the global model and returns the resulting update.

    In simulation several clients may share one model and optimizer object: each round starts by loading
    the global parameters in place and clearing the optimizer state (a fresh local optimizer per round).
    FedProx's proximal term ``mu/2 ||w - w_global||^2`` is added as its gradient ``mu (w - w_global)`` by an
    optimizer step pre-hook, so the user's training step stays untouched.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, train_fn: TrainFn,
                 *, local_epochs: int = 1, proximal_mu: float = 0.0, dp_sgd: DPSGDConfig | None = None) -> None:
        if local_epochs < 1:
            raise ConfigError(f"local_epochs must be at least 1, got {local_epochs}")
        if proximal_mu < 0:
            raise ConfigError(f"proximal mu must be non-negative, got {proximal_mu}")
        self.model, self.optimizer, self.loader, self.train_fn = model, optimizer, loader, train_fn
        self.local_epochs, self.proximal_mu = local_epochs, proximal_mu
        self.private = PrivateTraining(dp_sgd, model, optimizer, loader) if dp_sgd is not None else None

    def planned_events(self) -> tuple[PrivacyEvent, ...]:
        """What one round of local training spends (DP-SGD only; nothing otherwise)."""
        return (self.private.event(self.local_epochs),) if self.private is not None else ()

    @property
    def num_examples(self) -> int:
        return len(self.loader.dataset)  # type: ignore[arg-type]

    def fit(self, global_vector: np.ndarray, seed: int) -> LocalResult:
        """Train from ``global_vector`` for the local epochs; ``seed`` fixes shuffling and any randomness."""
        start = time.perf_counter()
        set_vector(self.model, global_vector)
        self.optimizer.state.clear()
        torch.manual_seed(seed)
        handle = self._proximal_hook() if self.proximal_mu > 0 else None
        losses: list[float] = []
        model, loader, optimizer = self.model, self.loader, self.optimizer
        if self.private is not None:
            self.private.reseed()
            model, loader, optimizer = self.private.model, self.private.loader, self.private.optimizer
        try:
            for _ in range(self.local_epochs):
                loss = self.train_fn(model, loader, optimizer)
                if loss is not None:
                    losses.append(float(loss))
        finally:
            if handle is not None:
                handle.remove()
        delta = get_vector(self.model) - global_vector
        train_loss = float(np.mean(losses)) if losses else None
        return LocalResult(delta, self.num_examples, train_loss, time.perf_counter() - start, self.planned_events())

    def _proximal_hook(self) -> torch.utils.hooks.RemovableHandle:
        params = trainable(self.model)
        anchors = [p.detach().clone() for p in params]
        mu = self.proximal_mu

        def add_proximal_gradient(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
            with torch.no_grad():
                for p, anchor in zip(params, anchors):
                    if p.grad is not None:
                        p.grad.add_(p - anchor, alpha=mu)

        return self.optimizer.register_step_pre_hook(add_proximal_gradient)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> float:
    """The default training step for classification: one epoch of cross-entropy, returns the mean loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    total, count = 0.0, 0
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(yb)
        count += len(yb)
    return total / max(count, 1)
