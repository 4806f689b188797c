"""Atomic checkpoints of the server state: written to a temporary file, fsynced, then renamed into place.

The file is a NumPy ``.npz`` archive read with ``allow_pickle=False``: arrays for the global parameters and
the server optimizer state, and one UTF-8 JSON document (stored as a uint8 array) for everything else.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from federation.errors import CheckpointError, OutputError

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ServerState:
    """Everything needed to continue a run after round ``round`` completed."""

    round: int
    params: np.ndarray
    optimizer_state: dict[str, np.ndarray]
    rng_state: dict[str, Any]
    history: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file, never a mix.

    A failed write (disk full, read-only or missing directory) raises :class:`OutputError` and leaves the
    old file and no temporary behind.
    """
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an :class:`OSError` raised while writing ``path`` into an :class:`OutputError` naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(path, err.strerror or str(err)) from err


def save(directory: Path, state: ServerState) -> Path:
    meta = {
        "format": FORMAT_VERSION,
        "round": state.round,
        "rng_state": state.rng_state,
        "history": state.history,
        "config": state.config,
        "run_id": state.run_id,
        "optimizer_keys": sorted(state.optimizer_state),
    }
    arrays = {"params": state.params, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    arrays.update({f"opt_{k}": v for k, v in state.optimizer_state.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(directory) / CHECKPOINT_NAME
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load(directory: Path) -> ServerState:
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode())
            if meta.get("format") != FORMAT_VERSION:
                raise CheckpointError(f"checkpoint format {meta.get('format')} is not {FORMAT_VERSION}")
            opt = {k: archive[f"opt_{k}"].copy() for k in meta["optimizer_keys"]}
            params = archive["params"].copy()
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"unreadable checkpoint {path}: {err}") from err
    return ServerState(meta["round"], params, opt, meta["rng_state"], meta["history"], meta["config"],
                       str(meta.get("run_id", "")))
