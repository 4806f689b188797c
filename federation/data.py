"""Datasets that ship inside installed packages (no download) and a synthetic generator for scale runs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import TensorDataset

from federation.errors import DataError
from federation.modes import DatasetName  # re-exported: its old home


DIGITS_SCALE = 1.0 / 16.0  # pixel intensities 0..16 to [0, 1]


@dataclass(frozen=True)
class FederatedData:
    """A train set to partition across clients and a held-out global test set."""

    train: TensorDataset
    test: TensorDataset
    num_features: int
    num_classes: int
    preprocessing: dict = field(default_factory=dict)  # what raw features went through (see model_io)

    @property
    def train_labels(self) -> np.ndarray:
        return self.train.tensors[1].numpy()


def load_dataset(name: DatasetName, *, seed: int = 0, test_fraction: float = 0.2, synthetic_samples: int = 5000,
                 synthetic_features: int = 32, synthetic_classes: int = 4) -> FederatedData:
    """Load ``name`` as standardized float32 features and int64 labels, split by a seeded stratified split."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if name is DatasetName.DIGITS:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = x * DIGITS_SCALE
    elif name is DatasetName.BREAST_CANCER:
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
    elif name is DatasetName.SYNTHETIC:
        x, y = synthetic_classification(synthetic_samples, synthetic_features, synthetic_classes, seed=seed)
    else:  # pragma: no cover - exhaustive over the enum
        raise DataError(f"unknown dataset {name}")
    data = _split(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64), test_fraction, seed,
                  standardize=name is not DatasetName.DIGITS)
    if name is DatasetName.DIGITS:
        data.preprocessing["scale"] = DIGITS_SCALE
    return data


def synthetic_classification(samples: int, features: int, classes: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class clusters around random centroids: a learnable task of any size."""
    if samples < classes or features < 1 or classes < 2:
        raise DataError(f"cannot make {samples} samples of {features} features in {classes} classes")
    rng = np.random.default_rng(seed)  # simulation data, not a secret
    centroids = rng.normal(0.0, 1.0, size=(classes, features))
    y = rng.integers(0, classes, size=samples)
    x = centroids[y] + rng.normal(0.0, 1.0, size=(samples, features))
    return x, y


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, *, standardize: bool) -> FederatedData:
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    preprocessing: dict = {}
    if standardize:
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        std[std == 0] = 1.0
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
        preprocessing = {"mean": mean.tolist(), "std": std.tolist()}
    classes = int(y.max()) + 1

    def tensors(a: np.ndarray, b: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.int64))

    return FederatedData(tensors(x_tr, y_tr), tensors(x_te, y_te), x.shape[1], classes, preprocessing)
