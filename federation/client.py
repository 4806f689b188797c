"""A federated client around the user's own model, optimizer, DataLoader and training function.

The user's training function keeps its signature ``train_fn(model, loader, optimizer)`` and is called once
per local epoch. It may return the epoch's mean loss (reported as ``train_loss``) or a mapping of metrics
(``{"loss": ..., "accuracy": ...}``; ``loss`` becomes ``train_loss``), averaged over the local epochs and
reported per client in the round history. :class:`EpochTrainer` adapts the common
``train(args, model, device, loader, optimizer, epoch)`` shape of the PyTorch examples.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dp.dpsgd import DPSGDConfig, PrivateTraining
from dp.events import PrivacyEvent
from federation.errors import ConfigError
from federation.params import get_vector, set_vector, trainable

TrainFn = Callable[[nn.Module, DataLoader, torch.optim.Optimizer], Optional[Union[float, Mapping[str, float]]]]


@dataclass(frozen=True)
class LocalResult:
    """One client's local training outcome: the update (local minus global) and its metrics."""

    delta: np.ndarray
    num_examples: int
    train_loss: float | None
    seconds: float
    events: tuple[PrivacyEvent, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RemoteClient:
    """A client that trains in another process, as the server knows it: what the runtime reaches it by
    (``address``), the example count and batches per epoch it reported, and, under DP-SGD, the settings it
    trains with (sent to it at enrolment), from which the server accounts its local training."""

    address: Any
    num_examples: int
    batches: int = 1
    local_epochs: int = 1
    dp_sgd: DPSGDConfig | None = None

    def planned_events(self) -> tuple[PrivacyEvent, ...]:
        """What one round of its local training spends, as :meth:`FederatedClient.planned_events`."""
        from dp.dpsgd import planned_event

        return () if self.dp_sgd is None else (planned_event(self.dp_sgd, self.batches, self.local_epochs),)


class FederatedClient:
    """Runs the user's training code on the global model and returns the resulting update.

    In simulation several clients may share one model and optimizer object: each round starts by loading
    the global parameters in place and clearing the optimizer state (a fresh local optimizer per round). With
    ``keep_optimizer_state`` the optimizer state (momentum, Adam moments) is kept per client instead: saved
    after its round and restored before its next one (hyperparameters such as a scheduled learning rate are
    left as they are).
    FedProx's proximal term ``mu/2 ||w - w_global||^2`` is added as its gradient ``mu (w - w_global)`` by an
    optimizer step pre-hook, so the user's training step stays untouched.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, train_fn: TrainFn,
                 *, local_epochs: int = 1, proximal_mu: float = 0.0, dp_sgd: DPSGDConfig | None = None,
                 keep_optimizer_state: bool = False) -> None:
        if local_epochs < 1:
            raise ConfigError(f"local_epochs must be at least 1, got {local_epochs}")
        if proximal_mu < 0:
            raise ConfigError(f"proximal mu must be non-negative, got {proximal_mu}")
        self.model, self.optimizer, self.loader, self.train_fn = model, optimizer, loader, train_fn
        self.local_epochs, self.proximal_mu = local_epochs, proximal_mu
        self.keep_optimizer_state = keep_optimizer_state
        self._optimizer_state: dict[torch.Tensor, dict[str, Any]] = {}
        self.private: PrivateTraining | None = None
        if dp_sgd is not None:
            self.enable_dp_sgd(dp_sgd)

    def enable_dp_sgd(self, config: DPSGDConfig) -> None:
        """Train with DP-SGD from now on: Opacus around this client's model, optimizer and loader."""
        self.private = PrivateTraining(config, self.model, self.optimizer, self.loader)

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
        if self.keep_optimizer_state:
            self.optimizer.state.update(_copy_state(self._optimizer_state))
        torch.manual_seed(seed)
        handle = self._proximal_hook() if self.proximal_mu > 0 else None
        epochs: list[dict[str, float]] = []
        model, loader, optimizer = self.model, self.loader, self.optimizer
        if self.private is not None:
            self.private.reseed()
            model, loader, optimizer = self.private.model, self.private.loader, self.private.optimizer
        try:
            for _ in range(self.local_epochs):
                epochs.append(_metrics(self.train_fn(model, loader, optimizer)))
        finally:
            if handle is not None:
                handle.remove()
        if self.keep_optimizer_state:
            self._optimizer_state = _copy_state(self.optimizer.state)
        delta = get_vector(self.model) - global_vector
        names = {k for e in epochs for k in e}
        metrics = {k: float(np.mean([e[k] for e in epochs if k in e])) for k in sorted(names)}
        return LocalResult(delta, self.num_examples, metrics.get("loss"), time.perf_counter() - start,
                           self.planned_events(), metrics)

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


def _metrics(value: object) -> dict[str, float]:
    """What a training function returned, as metrics: nothing, a loss, or a mapping of names to numbers."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    try:
        return {"loss": float(value)}  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"a training function returns None, a number or a mapping of metrics, "
                          f"not {type(value).__name__}") from None


def _copy_state(state: Mapping[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()} for p, s in state.items()}


class EpochTrainer:
    """Adapts ``train(args, model, device, loader, optimizer, epoch)`` (the PyTorch examples' shape) to a
    training function: ``args`` and ``device`` are passed through, ``epoch`` counts from 1 across rounds."""

    def __init__(self, train: Callable[..., Any], args: Any = None, device: torch.device | str = "cpu") -> None:
        self.train, self.args, self.device = train, args, torch.device(device)
        self.epoch = 0

    def __call__(self, model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> Any:
        self.epoch += 1
        return self.train(self.args, model, self.device, loader, optimizer, self.epoch)


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
