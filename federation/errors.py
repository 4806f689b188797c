"""Exceptions of the ``federation`` package: one root, typed leaves."""

from __future__ import annotations


class FederationError(Exception):
    """Root of every error raised by :mod:`federation`."""


class ConfigError(FederationError, ValueError):
    """An invalid or impossible run configuration (bad option value, too few clients, ...)."""


class DataError(FederationError, ValueError):
    """A dataset or partition that cannot be built as asked."""


class CheckpointError(FederationError, RuntimeError):
    """A checkpoint that is missing, corrupt, or belongs to a different run configuration."""


class RuntimeFailure(FederationError, RuntimeError):
    """A distributed runtime that could not start, lost its server, or ended without results."""
