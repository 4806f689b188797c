"""Exceptions of the ``secagg`` package: one root, typed leaves."""

from __future__ import annotations


class SecAggError(Exception):
    """Root of every error raised by :mod:`secagg`."""


class MessageError(SecAggError, ValueError):
    """Bytes that are not a well-formed message: bad magic, version, kind, length, dtype or shape."""


class ProtocolError(SecAggError, RuntimeError):
    """A well-formed message that the protocol state refuses: wrong session or round, unknown or duplicate sender."""


class UpdateRejected(SecAggError, ValueError):
    """A client update whose content is unusable: non-finite values, wrong dimension, bad weight."""


class AggregationAborted(SecAggError, RuntimeError):
    """Too few valid contributions survived for the aggregate to be released."""


class AggregateOutOfRange(AggregationAborted):
    """A decoded aggregate that its contributions cannot have produced (beyond clip and weight bounds)."""


class ConfigurationError(SecAggError, ValueError):
    """An impossible or unsafe protocol configuration."""


class AuthenticationError(SecAggError, ValueError):
    """A ciphertext or signature that does not verify. Deliberately says nothing about which check failed."""


class DecryptionRefused(SecAggError, RuntimeError):
    """The key holder's policy forbids this decryption (too few signed contributors, a repeated round, ...)."""


class ResourceExhausted(SecAggError, MemoryError):
    """Memory or disk that a round needs and this process cannot get; the message names the size. Not a party's
    fault: a runtime stops rather than blame a client."""
