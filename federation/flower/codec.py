"""What our Flower messages carry: protocol bytes in one ConfigRecord, and the few structures around them.

Every payload is a ``ConfigRecord`` named ``secagg`` of bytes, ints, floats and strings; protocol messages
stay our own versioned bytes (see docs/wire-format.md), so nothing a peer sends is ever unpickled.
"""

from __future__ import annotations

from typing import TypeVar

from flwr.app import ConfigRecord, Message, RecordDict

from secagg.aggregation import RoundContext
from secagg.errors import MessageError
from secagg.primitives.keys import PUBLIC_KEY_BYTES
from secagg.wire import SESSION_BYTES, BodyReader, BodyWriter

RECORD = "secagg"
_MAX_CLIENTS = 1 << 20
T = TypeVar("T", bytes, int, float, str)


def payload(**fields: bytes | int | float | str) -> RecordDict:
    return RecordDict({RECORD: ConfigRecord(dict(fields))})


def field(message: Message, name: str, kind: type[T]) -> T:
    """One typed field of a message's ``secagg`` record; :class:`MessageError` if absent or mistyped."""
    if message.has_error():
        raise MessageError(f"peer answered with an error: {message.error.reason}")
    record = message.content.config_records.get(RECORD)
    if record is not None and isinstance(record.get("error"), str):
        raise MessageError(f"peer refused: {record['error']}")
    value = None if record is None else record.get(name)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MessageError(f"message lacks a {kind.__name__} field {name!r}")
    return value


def json_field(message: Message, name: str) -> object:
    """A JSON text field, parsed; :class:`MessageError` if absent or not JSON. Nesting too deep for the parser
    (a RecursionError, not a JSONDecodeError) is malformed too: a peer's crafted text never escapes untyped."""
    import json

    text = field(message, name, str)
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise MessageError(f"the {name!r} field is not JSON") from None


def has_field(message: Message, name: str) -> bool:
    """Whether the message's ``secagg`` record carries ``name`` (optional fields); never for an error message
    (Flower raises ValueError on its content: :func:`field` turns the error into a :class:`MessageError`)."""
    if message.has_error() or not message.has_content():
        return False
    record = message.content.config_records.get(RECORD)
    return record is not None and name in record


def lost(message: Message) -> str | None:
    """Why the peer cannot go on with the round (its process restarted and the round's session, held only in
    memory, is gone): the server counts it as a dropout, not a refusal. None for any other answer."""
    record = None if message.has_error() else message.content.config_records.get(RECORD)
    value = None if record is None else record.get("lost")
    return value if isinstance(value, str) else None


def encode_context(ctx: RoundContext) -> bytes:
    w = BodyWriter().raw(ctx.session).u32(ctx.round).u32(ctx.dimension).u32(ctx.min_clients).u32(len(ctx.clients))
    for c in ctx.clients:
        w.u32(c)
    return w.to_bytes()


def decode_context(data: bytes) -> RoundContext:
    r = BodyReader(data)
    session, round_index, dimension, min_clients = r.raw(SESSION_BYTES), r.u32(), r.u32(), r.u32()
    clients = tuple(r.u32() for _ in range(r.count(max_count=_MAX_CLIENTS)))
    r.finish()
    return RoundContext(session, round_index, clients, dimension, min_clients)


def encode_directory(directory: dict[int, bytes]) -> bytes:
    w = BodyWriter().u32(len(directory))
    for client, key in sorted(directory.items()):
        w.u32(client).raw(key)
    return w.to_bytes()


def decode_directory(data: bytes) -> dict[int, bytes]:
    r = BodyReader(data)
    directory = {r.u32(): r.raw(PUBLIC_KEY_BYTES) for _ in range(r.count(max_count=_MAX_CLIENTS))}
    r.finish()
    return directory
