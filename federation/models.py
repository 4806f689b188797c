"""Default models for the embedded datasets."""

from __future__ import annotations

from torch import nn


def mlp(num_features: int, num_classes: int, hidden: int = 64) -> nn.Module:
    """A one-hidden-layer perceptron: enough for digits (>0.95) and breast cancer (>0.95)."""
    return nn.Sequential(nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
