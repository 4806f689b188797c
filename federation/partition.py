"""Partitioners that split one dataset across simulated clients: IID, Dirichlet label skew, quantity skew."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset

from federation.errors import DataError
from federation.modes import PartitionScheme  # re-exported: its old home

_MAX_TRIES = 1000


def iid_partition(num_samples: int, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle, then deal out equal shares."""
    _check(num_samples, num_clients)
    return [np.sort(part) for part in np.array_split(rng.permutation(num_samples), num_clients)]


def dirichlet_partition(labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator,
                        min_size: int = 2) -> list[np.ndarray]:
    """Label skew: each class is split across clients in proportions drawn from Dirichlet(alpha).

    Redraws until every client holds at least ``min_size`` examples (Hsu et al. 2019's scheme).
    """
    _check(len(labels), num_clients, min_size)
    if alpha <= 0:
        raise DataError(f"Dirichlet alpha must be positive, got {alpha}")
    classes = np.unique(labels)
    for _ in range(_MAX_TRIES):
        shards: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(num_clients, alpha))) * len(idx)).astype(int)[:-1]
            for client, part in enumerate(np.split(idx, cuts)):
                shards[client].append(part)
        parts = [np.sort(np.concatenate(s)) for s in shards]
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise DataError(f"could not give every one of {num_clients} clients {min_size} examples with alpha={alpha}")


def quantity_skew_partition(num_samples: int, num_clients: int, alpha: float, rng: np.random.Generator,
                            min_size: int = 2) -> list[np.ndarray]:
    """Quantity skew: client sizes drawn from Dirichlet(alpha), labels IID."""
    _check(num_samples, num_clients, min_size)
    if alpha <= 0:
        raise DataError(f"Dirichlet alpha must be positive, got {alpha}")
    spare = num_samples - min_size * num_clients
    extra = np.floor(rng.dirichlet(np.full(num_clients, alpha)) * spare).astype(int)
    extra[: spare - extra.sum()] += 1  # hand out the rounding remainder
    cuts = np.cumsum(min_size + extra)[:-1]
    return [np.sort(p) for p in np.split(rng.permutation(num_samples), cuts)]


def partition(labels: np.ndarray, num_clients: int, scheme: PartitionScheme, *, alpha: float = 0.5,
              seed: int = 0) -> list[np.ndarray]:
    """Index arrays, one per client, for ``scheme``."""
    rng = np.random.default_rng(seed)  # simulation data layout, not a secret
    if scheme is PartitionScheme.IID:
        return iid_partition(len(labels), num_clients, rng)
    if scheme is PartitionScheme.DIRICHLET:
        return dirichlet_partition(np.asarray(labels), num_clients, alpha, rng)
    return quantity_skew_partition(len(labels), num_clients, alpha, rng)


def partition_dataset(dataset: Dataset, num_clients: int, scheme: PartitionScheme = PartitionScheme.DIRICHLET, *,
                      alpha: float = 0.5, seed: int = 0) -> list[Subset]:
    """Split a labelled torch dataset (items ``(x, y)``) into one :class:`~torch.utils.data.Subset` per client."""
    labels = _labels(dataset)
    return [Subset(dataset, idx.tolist()) for idx in partition(labels, num_clients, scheme, alpha=alpha, seed=seed)]


def _labels(dataset: Dataset) -> np.ndarray:
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) >= 2:
        return np.asarray(tensors[1])
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def _check(num_samples: int, num_clients: int, min_size: int = 1) -> None:
    if num_clients < 1:
        raise DataError(f"need at least one client, got {num_clients}")
    if num_samples < num_clients * min_size:
        raise DataError(f"{num_samples} examples cannot give {num_clients} clients {min_size} each")
