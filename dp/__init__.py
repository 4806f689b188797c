"""Differential privacy for federated training and the bookkeeping of what it spent."""

from dp.errors import BudgetExceeded, DPError, InvalidPrivacyParameter
from dp.events import PrivacyEvent

__all__ = ["BudgetExceeded", "DPError", "InvalidPrivacyParameter", "PrivacyEvent"]
