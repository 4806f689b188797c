"""The torch-free load of Opacus's analysis computes what Opacus's own accountants do."""

import subprocess
import sys

import pytest

from dp.accounting import opacus_analysis
from dp.accounting.prv import prv_epsilon

HISTORIES = [
    [(1.0, 0.01, 1000)],
    [(1.1, 0.05, 300), (0.8, 0.02, 50)],
    [(2.0, 1.0, 20)],
]


@pytest.mark.parametrize("history", HISTORIES)
def test_prv_epsilon_equals_opacus_prv_accountant(history):
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = list(history)
    assert prv_epsilon(history, 1e-5, 0.01) == pytest.approx(accountant.get_epsilon(1e-5, eps_error=0.01), rel=1e-12)


@pytest.mark.parametrize("history", HISTORIES)
def test_domain_sizing_stand_in_equals_opacus_rdp_accountant(history):
    from opacus.accountants import RDPAccountant

    ours, theirs = opacus_analysis._RDPAccountant(), RDPAccountant()
    ours.history = theirs.history = list(history)
    assert ours.get_epsilon(1e-6) == pytest.approx(theirs.get_epsilon(1e-6), rel=1e-12)


def test_audit_imports_no_torch(tmp_path):
    code = ("import sys; from dp.accounting.prv import PRVAccountant; from dp.events import GaussianEvent; "
            "a = PRVAccountant(); a.compose(GaussianEvent(1.0)); print(a.epsilon(1e-5)); "
            "assert 'torch' not in sys.modules and 'opacus' not in sys.modules, 'torch or opacus imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) > 0
