"""Versioned binary wire format shared by every message that crosses the client/server boundary.

Layout of an envelope (all integers big-endian)::

    magic    4 bytes   b"SAGG"
    version  1 byte    WIRE_VERSION
    kind     1 byte    MessageKind
    session 16 bytes   random per federated round
    round    4 bytes   u32 round index
    sender   4 bytes   u32 client id, SERVER_ID for the server
    length   4 bytes   u32 length of the body
    body     length bytes

A body is a sequence of fields written by :class:`BodyWriter` and read back, in the same order, by
:class:`BodyReader`. Arrays carry a dtype code, their shape and their raw little-endian data. Every read
checks bounds; trailing bytes are an error. Nothing here unpickles anything.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np

from secagg.errors import MessageError

MAGIC = b"SAGG"
WIRE_VERSION = 1
SESSION_BYTES = 16
SERVER_ID = 0xFFFFFFFF
DEFAULT_MAX_BODY = 1 << 30  # 1 GiB

_HEADER = struct.Struct(">4sBB16sIII")
_COPY_LIMIT = 1 << 16  # larger bodies are read-only views of the message, not copies
HEADER_BYTES = _HEADER.size


class MessageKind(enum.IntEnum):
    """Every message type of every protocol; values are stable wire constants."""

    MODEL_BROADCAST = 1
    PLAIN_UPDATE = 2
    MASK_ADVERTISE = 10
    MASK_KEY_LIST = 11
    MASK_SHARES = 12
    MASK_SHARE_RELAY = 13
    MASK_INPUT = 14
    MASK_CONSISTENCY_REQUEST = 15
    MASK_CONSISTENCY_SIGNATURE = 16
    MASK_UNMASK_REQUEST = 17
    MASK_UNMASK_SHARES = 18
    CKKS_UPDATE = 20
    CKKS_DECRYPT_REQUEST = 21
    CKKS_RELEASE = 22
    MASK_REVEAL = 30
    MASK_REVEAL_LIST = 31
    CKKS_CHALLENGE = 40
    CKKS_SKETCH = 41


_DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<u4"),
    4: np.dtype("<u8"),
    5: np.dtype("<i8"),
    6: np.dtype("u1"),
}
_CODE_OF = {dt: code for code, dt in _DTYPE_CODES.items()}
_MAX_NDIM = 8


@dataclass(frozen=True)
class Envelope:
    """A parsed message header with its body still as bytes (a read-only view for large bodies)."""

    kind: MessageKind
    session: bytes
    round: int
    sender: int
    body: bytes | memoryview

    def to_bytes(self) -> bytes:
        if len(self.session) != SESSION_BYTES:
            raise MessageError(f"session id must be {SESSION_BYTES} bytes, got {len(self.session)}")
        header = _HEADER.pack(
            MAGIC, WIRE_VERSION, int(self.kind), self.session, self.round, self.sender, len(self.body)
        )
        return header + self.body

    @classmethod
    def from_bytes(cls, data: bytes, *, max_body: int = DEFAULT_MAX_BODY) -> Envelope:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MessageError(f"message must be bytes, got {type(data).__name__}")
        if len(data) < HEADER_BYTES:
            raise MessageError(f"message of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
        magic, version, kind, session, round_, sender, length = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise MessageError("bad magic: not a secagg message")
        if version != WIRE_VERSION:
            raise MessageError(f"unsupported wire version {version} (this build speaks {WIRE_VERSION})")
        try:
            kind = MessageKind(kind)
        except ValueError:
            raise MessageError(f"unknown message kind {kind}") from None
        if length > max_body:
            raise MessageError(f"body of {length} bytes exceeds the limit of {max_body}")
        if len(data) != HEADER_BYTES + length:
            raise MessageError(f"body length field says {length} bytes but {len(data) - HEADER_BYTES} follow")
        return cls(kind, session, round_, sender, bytes(data[HEADER_BYTES:]) if length <= _COPY_LIMIT
                   else memoryview(data)[HEADER_BYTES:].toreadonly())

    def expect(self, kind: MessageKind) -> Envelope:
        """Return self if it is of ``kind``, else raise :class:`MessageError`."""
        if self.kind is not kind:
            raise MessageError(f"expected a {kind.name} message, got {self.kind.name}")
        return self


class BodyWriter:
    """Appends typed fields to a message body."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> BodyWriter:
        self._parts.append(struct.pack(">B", value))
        return self

    def u32(self, value: int) -> BodyWriter:
        self._parts.append(struct.pack(">I", value))
        return self

    def raw(self, value: bytes) -> BodyWriter:
        """Bytes of a length both sides know (keys, signatures): no length prefix."""
        self._parts.append(bytes(value))
        return self

    def f64(self, value: float) -> BodyWriter:
        self._parts.append(struct.pack(">d", value))
        return self

    def blob(self, value: bytes) -> BodyWriter:
        self._parts.append(struct.pack(">I", len(value)) + bytes(value))
        return self

    def array(self, value: np.ndarray) -> BodyWriter:
        code = _CODE_OF.get(value.dtype.newbyteorder("<"))
        if code is None:
            raise MessageError(f"dtype {value.dtype} has no wire code")
        if value.ndim > _MAX_NDIM:
            raise MessageError(f"array of {value.ndim} dimensions exceeds {_MAX_NDIM}")
        header = struct.pack(">BB", code, value.ndim) + struct.pack(f">{value.ndim}Q", *value.shape)
        data = np.ascontiguousarray(value, dtype=_DTYPE_CODES[code]).tobytes()
        self._parts.append(header + data)
        return self

    def to_bytes(self) -> bytes:
        return b"".join(self._parts)


class BodyReader:
    """Reads typed fields back from a body, checking every bound."""

    def __init__(self, body: bytes) -> None:
        self._view = memoryview(body)
        self._pos = 0

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or self._pos + n > len(self._view):
            raise MessageError(f"truncated message: {what} needs {n} bytes, {len(self._view) - self._pos} left")
        chunk = self._view[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self) -> int:
        return self._take(1, "u8")[0]

    def u32(self) -> int:
        return struct.unpack(">I", self._take(4, "u32"))[0]

    def raw(self, n: int) -> bytes:
        return bytes(self._take(n, "fixed-size field"))

    def count(self, *, max_count: int) -> int:
        """A u32 element count, refused above ``max_count``."""
        n = self.u32()
        if n > max_count:
            raise MessageError(f"count {n} exceeds the limit of {max_count}")
        return n

    def f64(self) -> float:
        return struct.unpack(">d", self._take(8, "f64"))[0]

    def blob(self, *, max_len: int = DEFAULT_MAX_BODY) -> bytes:
        n = self.u32()
        if n > max_len:
            raise MessageError(f"field of {n} bytes exceeds the limit of {max_len}")
        return bytes(self._take(n, "blob"))

    def array(self, *, dtype: np.dtype | str, shape: tuple[int, ...], copy: bool = True) -> np.ndarray:
        """Read an array that must have exactly ``dtype`` and ``shape``: a writable copy, or with
        ``copy=False`` a read-only view of the message bytes."""
        code, ndim = struct.unpack(">BB", self._take(2, "array header"))
        got = _DTYPE_CODES.get(code)
        if got is None:
            raise MessageError(f"unknown dtype code {code}")
        want = np.dtype(dtype)
        if got.kind != want.kind or got.itemsize != want.itemsize:
            raise MessageError(f"expected dtype {want}, got {got}")
        if ndim > _MAX_NDIM:
            raise MessageError(f"array of {ndim} dimensions exceeds {_MAX_NDIM}")
        got_shape = struct.unpack(f">{ndim}Q", self._take(8 * ndim, "array shape"))
        if tuple(got_shape) != tuple(shape):
            raise MessageError(f"expected shape {tuple(shape)}, got {tuple(got_shape)}")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        raw = self._take(count * got.itemsize, "array data")
        view = np.frombuffer(raw, dtype=got).reshape(shape)
        return view.copy() if copy else view

    def finish(self) -> None:
        """Raise :class:`MessageError` if bytes remain unread."""
        left = len(self._view) - self._pos
        if left:
            raise MessageError(f"{left} unexpected trailing bytes")
