"""Flat float32 views of a model's trainable parameters: what travels between server and clients."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from federation.errors import ConfigError


def trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def dimension(model: nn.Module) -> int:
    return sum(p.numel() for p in trainable(model))


def get_vector(model: nn.Module) -> np.ndarray:
    """The trainable parameters concatenated into one float32 vector (a copy)."""
    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1).to(torch.float32) for p in trainable(model)]).numpy().copy()


def set_vector(model: nn.Module, vector: np.ndarray) -> None:
    """Overwrite the trainable parameters in place from a flat vector."""
    params = trainable(model)
    total = sum(p.numel() for p in params)
    if vector.shape != (total,):
        raise ConfigError(f"parameter vector of shape {vector.shape} for a model of {total} parameters")
    flat = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float32))
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n
