"""Example-level DP-SGD in a client through Opacus, around the user's own model, optimizer and DataLoader.

The user's training step is unchanged: it receives Opacus's GradSampleModule, DPOptimizer and a
Poisson-sampling DataLoader in place of its own objects. Each local epoch is one pass of Poisson sampling
with rate q = batch_size / len(dataset); a round emits ``PoissonSampledGaussianEvent(z, q, steps)``, which the
ledger composes with every earlier round of that client (it never resets). Noise comes from a torch
generator seeded from ``os.urandom`` each round (a CSPRNG-backed torch generator, torchcsprng, is not
available for this torch); ``secure_mode`` adds Opacus's defence against floating-point attacks.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from dp.errors import InvalidPrivacyParameter
from dp.events import GaussianEvent, PoissonSampledGaussianEvent


@dataclass(frozen=True)
class DPSGDConfig:
    noise_multiplier: float
    max_grad_norm: float
    secure_mode: bool = False

    def __post_init__(self) -> None:
        GaussianEvent(self.noise_multiplier)
        if not self.max_grad_norm > 0:
            raise InvalidPrivacyParameter(f"max_grad_norm must be positive, got {self.max_grad_norm}")


# Opacus's per-sample hooks on a first layer whose input needs no gradient: harmless, and said every batch
warnings.filterwarnings("ignore", message="Full backward hook is firing")


class PrivateTraining:
    """Opacus objects for one client, built once and reused every round."""

    _grad_sample_modules: dict[int, Any] = {}

    def __init__(self, config: DPSGDConfig, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loader: DataLoader) -> None:
        # imported here: Opacus takes over a second to import, and only DP-SGD clients need it
        from opacus import GradSampleModule
        from opacus.data_loader import DPDataLoader
        from opacus.optimizers import DPOptimizer

        self.config = config
        check_model(model)
        key = id(model)
        if key not in self._grad_sample_modules:  # clients sharing one model share one wrapper
            self._grad_sample_modules[key] = GradSampleModule(model)
        self.model = self._grad_sample_modules[key]
        self.generator = torch.Generator()
        self.loader = DPDataLoader.from_data_loader(loader, generator=self.generator)
        self.sample_rate = self.loader.sample_rate
        expected_batch = max(1, round(self.sample_rate * len(loader.dataset)))  # type: ignore[arg-type]
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=config.noise_multiplier,
                                     max_grad_norm=config.max_grad_norm, expected_batch_size=expected_batch,
                                     generator=self.generator, secure_mode=config.secure_mode)

    def reseed(self) -> None:
        self.generator.manual_seed(int.from_bytes(os.urandom(8), "big"))

    def event(self, epochs: int) -> PoissonSampledGaussianEvent:
        return PoissonSampledGaussianEvent(self.config.noise_multiplier, self.sample_rate,
                                           epochs * len(self.loader))


def planned_event(config: DPSGDConfig, batches: int, epochs: int) -> PoissonSampledGaussianEvent:
    """What ``epochs`` local epochs of a client with ``batches`` batches an epoch spend, as
    :class:`PrivateTraining` will (Opacus samples at rate 1 / batches, ``int(1 / rate)`` steps an epoch): the
    server's account of a client training in another process."""
    rate = 1.0 / batches
    return PoissonSampledGaussianEvent(config.noise_multiplier, rate, epochs * int(1 / rate))


def check_model(model: nn.Module) -> None:
    """Refuse a model DP-SGD cannot train privately (Opacus's ``ModuleValidator``), saying how to fix it."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        found = "; ".join(sorted({str(e) for e in errors}))
        raise InvalidPrivacyParameter(
            f"DP-SGD cannot train this model: {found}. BatchNorm mixes examples of a batch, so per-example "
            "gradients (and their clipping) are undefined: replace it before creating the optimizer, e.g. "
            "model = opacus.validators.ModuleValidator.fix(model) (GroupNorm in place of BatchNorm)")
