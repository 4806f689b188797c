import numpy as np
import pytest

from federation.data import DatasetName, load_dataset, synthetic_classification
from federation.errors import DataError


@pytest.mark.parametrize("name, features, classes", [
    (DatasetName.DIGITS, 64, 10),
    (DatasetName.BREAST_CANCER, 30, 2),
    (DatasetName.SYNTHETIC, 32, 4),
])
def test_embedded_datasets_load_without_download(name, features, classes):
    data = load_dataset(name, seed=0)
    assert data.num_features == features and data.num_classes == classes
    x, y = data.train.tensors
    assert x.dtype.is_floating_point and x.shape[1] == features
    assert set(np.unique(y.numpy())) == set(range(classes))
    assert len(data.test) > 0


def test_split_is_seeded():
    a, b = load_dataset(DatasetName.DIGITS, seed=1), load_dataset(DatasetName.DIGITS, seed=1)
    assert np.array_equal(a.train_labels, b.train_labels)


def test_bad_settings():
    with pytest.raises(DataError):
        load_dataset(DatasetName.DIGITS, test_fraction=1.5)
    with pytest.raises(DataError):
        synthetic_classification(10, 0, 2)
