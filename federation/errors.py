"""Exceptions of the ``federation`` package: one root, typed leaves."""

from __future__ import annotations

from pathlib import Path


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


class OutOfMemory(FederationError, MemoryError):
    """A round that did not fit in this process's memory (or spool disk); the message names the sizes."""


class OutputError(FederationError, OSError):
    """An output file (checkpoint, ledger, results) that could not be written: a full, read-only or missing
    ``--out``. The files already there are left as they were."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path


def available_memory() -> str:
    """How much memory this machine has available now, for messages about what did not fit."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return f"{int(line.split()[1]) * 1024:,} bytes available now"
    except (OSError, ValueError):
        pass
    return "available memory unknown"
