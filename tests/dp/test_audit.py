import pytest

from dp.audit import audit, epsilon_per_round
from dp.events import DistributedDiscreteGaussianEvent, GaussianEvent, PoissonSampledGaussianEvent
from dp.ledger import LEDGER_NAME, POPULATION, PrivacyLedger

DISCRETE = DistributedDiscreteGaussianEvent(1.0, 4, 4, 5e3, 1e4, 100)  # effective z = 1


def test_audit_reports_both_accountants_per_client_and_population():
    ledger = PrivacyLedger(1e-5)
    for r in range(3):
        ledger.commit(r, {0: [PoissonSampledGaussianEvent(1.0, 0.1, 10)], 1: [GaussianEvent(2.0)],
                          POPULATION: [GaussianEvent(2.0)]}, None)
    report = audit(ledger)
    assert report["clients"]["0"]["rounds"] == 3 and report["clients"]["0"]["steps"] == 30
    assert report["clients"]["0"]["epsilon_prv"] < report["clients"]["0"]["epsilon_rdp"]
    assert report["population"]["epsilon_rdp"] == pytest.approx(ledger.epsilon(POPULATION))
    assert [r for r, _ in epsilon_per_round(ledger, 0)] == [0, 1, 2]


def test_events_bounded_only_in_rdp_get_the_rdp_epsilon_under_prv_too(tmp_path):
    path = tmp_path / LEDGER_NAME
    ledger = PrivacyLedger(1e-5)
    for r in range(5):
        ledger.commit(r, {0: [DISCRETE], 1: [GaussianEvent(1.0)], POPULATION: [DISCRETE]}, path)
    report = audit(PrivacyLedger.load(path))
    bounded, exact = report["clients"]["0"], report["clients"]["1"]
    assert bounded["epsilon_rdp"] == pytest.approx(exact["epsilon_rdp"])  # the same Gaussian RDP curve
    assert bounded["epsilon_prv"] == bounded["epsilon_rdp"]  # never a tighter claim than the bound allows
    assert exact["epsilon_prv"] < exact["epsilon_rdp"]
    assert report["population"]["epsilon_prv"] == report["population"]["epsilon_rdp"]


def test_the_audit_states_units_relations_and_native_zcdp():
    from dp.audit import audit
    from dp.events import GaussianEvent, PoissonSampledGaussianEvent
    from dp.ledger import POPULATION, PrivacyLedger

    ledger = PrivacyLedger(1e-5)
    for r in range(4):
        ledger.commit(r, {0: [GaussianEvent(2.0)], POPULATION: [GaussianEvent(2.0)],
                          1: [PoissonSampledGaussianEvent(1.0, 0.1, 5)]}, None)
    report = audit(ledger, prv=False)
    population, example = report["population"], report["clients"]["1"]
    assert (population["unit"], population["relation"]) == ("client", "replace-with-zero")
    assert population["zcdp_rho"] == 4 / (2 * 4.0) and population["gdp_mu"] == 1.0
    assert (example["unit"], example["relation"]) == ("example", "add/remove")
    assert example["zcdp_rho"] is None  # subsampled: not natively zCDP
