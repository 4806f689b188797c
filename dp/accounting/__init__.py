"""Accountants: turn privacy events into (epsilon, delta). Pure analysis lives in Opacus and in this package;
the accountant objects only keep state, and compose check-then-commit."""

from dp.accounting.base import Accountant
from dp.accounting.prv import PRVAccountant
from dp.accounting.rdp import RDPAccountant

__all__ = ["Accountant", "PRVAccountant", "RDPAccountant"]
