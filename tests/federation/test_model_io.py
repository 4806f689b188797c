"""model.npz: a state_dict with its preprocessing; anything else is a CheckpointError, never unpickled."""

import io
import json

import numpy as np
import pytest
import torch
from torch import nn

from federation.errors import CheckpointError
from federation.model_io import load_model, save_model


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_round_trip_keeps_every_entry_and_dtype(tmp_path):
    m = model()
    m.train()
    m(torch.randn(8, 4))  # moves the BatchNorm running statistics; num_batches_tracked is int64
    path = save_model(m, tmp_path / "m.npz", {"mean": [0.5] * 4, "std": [2.0] * 4})
    fresh = model()
    state, pre = load_model(path, fresh)
    assert pre == {"mean": [0.5] * 4, "std": [2.0] * 4}
    for name, tensor in m.state_dict().items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor)
        assert torch.equal(fresh.state_dict()[name], tensor)


def test_a_model_of_another_shape_is_refused(tmp_path):
    path = save_model(model(), tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_model(path, nn.Linear(4, 2))


@pytest.mark.parametrize("content", [b"", b"not a zip", None])
def test_garbage_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "m.npz"
    if content is None:  # a well-formed archive with a crafted dtype name
        meta = {"format": 1, "dtypes": {"w": "load"}, "preprocessing": {}}
        buffer = io.BytesIO()
        np.savez(buffer, **{"sd/w": np.zeros(2), "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)})
        content = buffer.getvalue()
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_model(path)
