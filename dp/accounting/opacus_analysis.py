"""Opacus's accounting analysis (RDP of the subsampled Gaussian, PRV discretization and composition) without
importing torch.

The analysis modules under ``opacus/accountants/analysis`` need only NumPy and SciPy, but importing them as
``opacus.accountants.analysis`` runs ``opacus/__init__`` first, which loads torch and the privacy engine: about
2.5 s of a ``secagg audit`` that otherwise takes 2. This module executes the same files, unchanged, under a
private package name (:data:`PACKAGE`). The one import they make outside the analysis package,
``opacus.accountants.rdp.RDPAccountant`` (its ``get_epsilon``, used to size the PRV domain), is answered by
:class:`_RDPAccountant`, which computes what Opacus's does from the same analysis functions
(``tests/dp/accounting/test_opacus_analysis.py`` checks both against the real Opacus classes).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType

from dp.errors import DPError

PACKAGE = "dp.accounting._opacus_accountants"  # stands for ``opacus.accountants``
_LOCK = threading.Lock()


class _RDPAccountant:
    """The part of ``opacus.accountants.RDPAccountant`` that Opacus's PRV domain sizing calls."""

    DEFAULT_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))

    def __init__(self) -> None:
        self.history: list[tuple[float, float, int]] = []

    def get_epsilon(self, delta: float, alphas: list[float] | None = None, **_: object) -> float:
        if not self.history:
            return 0.0
        analysis = rdp()
        orders = alphas or self.DEFAULT_ALPHAS
        total = sum(analysis.compute_rdp(q=q, noise_multiplier=z, steps=n, orders=orders) for z, q, n in self.history)
        eps, _ = analysis.get_privacy_spent(orders=orders, rdp=total, delta=delta)
        return float(eps)


def _package(name: str, path: Path | None) -> ModuleType:
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module = importlib.util.module_from_spec(spec)
    module.__path__ = [str(path)] if path is not None else []
    sys.modules[name] = module
    return module


def _install() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec("opacus")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise DPError("Opacus is not installed: it provides the RDP and PRV analysis")
    accountants = Path(list(spec.submodule_search_locations)[0]) / "accountants"
    _package(PACKAGE, accountants)
    stand_in = ModuleType(f"{PACKAGE}.rdp")
    stand_in.RDPAccountant = _RDPAccountant  # type: ignore[attr-defined]
    sys.modules[stand_in.__name__] = stand_in


def _load(name: str) -> ModuleType:
    with _LOCK:
        _install()
        return importlib.import_module(f"{PACKAGE}.analysis.{name}")


def rdp() -> ModuleType:
    """``opacus.accountants.analysis.rdp``: ``compute_rdp``, ``get_privacy_spent``, ``_compute_rdp``."""
    return _load("rdp")


def prv() -> ModuleType:
    """``opacus.accountants.analysis.prv``: PRVs, their discretization and composition, domain sizing."""
    return _load("prv")
