"""Bytes in and out of SEAL objects.

TenSEAL's low-level binding serializes SEAL objects only through file paths, so bytes pass through a private
temporary directory (in memory under /dev/shm where available). SEAL's loader validates what it reads
against the context (sizes, moduli, parameter ids); any failure becomes a :class:`MessageError`.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import TypeVar

import tenseal.sealapi as seal

from secagg.errors import MessageError  # noqa: F401 (re-exported for packing)

MAX_CIPHERTEXT_BYTES = 1 << 22  # a serialized ciphertext of the supported parameters is far smaller
# What SEAL's C++ exceptions arrive as through pybind11 (invalid_argument, logic_error, out_of_range, ...),
# for operations on objects already loaded and validated.
SEAL_ERRORS: tuple[type[Exception], ...] = (ValueError, RuntimeError, IndexError, OverflowError, TypeError)

_DIR = Path(tempfile.mkdtemp(prefix="secagg-seal-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
_LOCK = threading.Lock()
T = TypeVar("T")


def _path() -> str:
    return str(_DIR / f"{os.getpid()}-{threading.get_ident()}")


def dump(obj: object) -> bytes:
    """SEAL's own serialization (compressed) of a ciphertext or key."""
    with _LOCK:
        path = _path()
        obj.save(path)  # type: ignore[attr-defined]
        try:
            return Path(path).read_bytes()
        finally:
            os.unlink(path)


def load(kind: type[T], data: bytes, context: seal.SEALContext, *, what: str) -> T:
    """A SEAL ciphertext or public key read from untrusted ``data`` and validated against ``context``."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
        raise MessageError(f"empty or non-bytes {what}")
    obj = kind(context) if kind is seal.Ciphertext else kind()
    with _LOCK:
        path = _path()
        Path(path).write_bytes(bytes(data))
        try:
            obj.load(context, path)  # type: ignore[attr-defined]
        except Exception as err:  # SEAL's std exceptions arrive as several Python types; bad_alloc too
            raise MessageError(f"invalid {what}: {err}") from None
        finally:
            os.unlink(path)
    if not seal.is_valid_for(obj, context):
        raise MessageError(f"{what} is not valid for this CKKS context")
    return obj
