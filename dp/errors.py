"""Exceptions of the ``dp`` package: one root, typed leaves."""

from __future__ import annotations


class DPError(Exception):
    """Root of every error raised by :mod:`dp`."""


class BudgetExceeded(DPError, RuntimeError):
    """A release would take a client or the population over its privacy budget."""


class InvalidPrivacyParameter(DPError, ValueError):
    """A noise multiplier, sampling rate, delta or similar parameter outside its valid range."""


class NoiseTooLow(InvalidPrivacyParameter):
    """A party was asked to train or release with less noise than its own privacy settings require (a server
    that deviates, announcing a smaller noise multiplier)."""
