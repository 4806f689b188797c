"""The final model as a ``state_dict`` file, with the preprocessing its inputs need.

``model.npz`` is a NumPy archive read with ``allow_pickle=False``: one array per ``state_dict`` entry
(``sd/<name>``) and a UTF-8 JSON document (``meta``) holding the entries' dtypes and the preprocessing, e.g.
``{"scale": 0.0625}`` for the built-in digits or ``{"mean": [...], "std": [...]}`` for standardized features:
apply ``(x * scale - mean) / std`` (each part optional) to raw features before calling the model.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from federation.checkpoint import atomic_write_bytes
from federation.errors import CheckpointError

MODEL_NAME = "model.npz"
FORMAT_VERSION = 1


def save_model(model: nn.Module, path: Path | str, preprocessing: dict[str, Any] | None = None) -> Path:
    """Write ``model.state_dict()`` and ``preprocessing`` to ``path`` atomically."""
    path = Path(path)
    state = model.state_dict()
    arrays = {f"sd/{name}": tensor.detach().cpu().numpy() for name, tensor in state.items()}
    meta = {"format": FORMAT_VERSION, "dtypes": {name: str(t.dtype).removeprefix("torch.") for name, t in state.items()},
            "preprocessing": preprocessing or {}}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_model(path: Path | str, model: nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The ``state_dict`` and preprocessing saved at ``path``; loaded into ``model`` too when one is given."""
    try:
        with np.load(Path(path), allow_pickle=False) as archive:
            meta = json.loads(bytes(archive["meta"]).decode())
            if meta.get("format") != FORMAT_VERSION:
                raise CheckpointError(f"{path}: model format {meta.get('format')!r}, expected {FORMAT_VERSION}")
            state = {name: torch.from_numpy(archive[f"sd/{name}"].copy()).to(_dtype(dtype))
                     for name, dtype in meta["dtypes"].items()}
    except CheckpointError:
        raise
    except (OSError, EOFError, KeyError, ValueError, AttributeError, TypeError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: not a saved model ({type(err).__name__}: {err})") from None
    if model is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: does not fit this model: {err}") from None
    return state, dict(meta.get("preprocessing", {}))


def _dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dtype
