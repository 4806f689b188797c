"""One-run empirical audits of small trainings: a positive lower bound where the noise is weak, above a noised
run's accounted upper bound without noise, and never above the accounted upper bound of a noised run."""

from __future__ import annotations

import json

import pytest

from federation.canary import CLIENT, EXAMPLE, CanaryAudit, audit_job, plot_bounds, report, run_empirical_audit
from federation.errors import ConfigError
from federation.experiment_config import ExperimentConfig, PrivacySettings
from federation.modes import DPMode

# client level: 10 clients, 1 local epoch, 3 rounds: a few seconds per run
SMALL = dict(rounds=3, local_epochs=1)


def _central(z: float) -> ExperimentConfig:
    return ExperimentConfig(**SMALL, dp=DPMode.CENTRAL, privacy=PrivacySettings(noise_multiplier=z))


@pytest.fixture(scope="module")
def no_noise() -> CanaryAudit:
    return audit_job(ExperimentConfig(**SMALL), 100, level=CLIENT)[0]


@pytest.fixture(scope="module")
def weak_noise() -> CanaryAudit:
    return audit_job(_central(0.3), 100)[0]  # accounted epsilon about 40


@pytest.fixture(scope="module")
def strong_noise() -> CanaryAudit:
    return audit_job(_central(8.0), 100)[0]


def test_weak_noise_gives_a_positive_lower_bound(weak_noise: CanaryAudit) -> None:
    assert weak_noise.level == CLIENT and weak_noise.noise_multiplier == pytest.approx(0.3)
    assert weak_noise.epsilon_lower > 1.0
    assert weak_noise.epsilon_upper is not None and weak_noise.epsilon_upper > 10


def test_no_noise_beats_the_upper_bound_of_a_noised_run(no_noise: CanaryAudit, strong_noise: CanaryAudit) -> None:
    assert no_noise.epsilon_upper is None and no_noise.noise_multiplier is None
    assert strong_noise.epsilon_upper is not None
    assert no_noise.epsilon_lower > strong_noise.epsilon_upper


def test_empirical_bound_never_exceeds_the_accounted_one(weak_noise: CanaryAudit,
                                                        strong_noise: CanaryAudit) -> None:
    for audit in (weak_noise, strong_noise):
        assert audit.epsilon_upper is not None
        assert 0 <= audit.epsilon_lower <= audit.epsilon_upper
        assert audit.delta == 1e-5 and audit.rounds == SMALL["rounds"]


def test_dp_sgd_example_canaries_stay_below_the_accounted_bound() -> None:
    # two clients, two rounds, one local epoch of batches of 64: a DP-SGD run of a few seconds
    config = ExperimentConfig(clients=2, rounds=2, local_epochs=1, batch_size=64, dp=DPMode.LOCAL,
                              privacy=PrivacySettings(noise_multiplier=1.0))
    audit, federation = audit_job(config, 50)
    assert audit.level == EXAMPLE and audit.m == 50
    assert audit.epsilon_upper == pytest.approx(federation.history.epsilon(delta=1e-5))
    assert 0 <= audit.epsilon_lower <= audit.epsilon_upper


def test_run_empirical_audit_writes_a_report_and_a_plot(tmp_path, no_noise: CanaryAudit,
                                                        strong_noise: CanaryAudit) -> None:
    doc = run_empirical_audit(_central(8.0), 20, tmp_path / "run")
    written = json.loads((tmp_path / "run" / "empirical.json").read_text())
    assert written == doc and written["audits"][0]["m"] == 20
    for name in ("empirical.png", "results.json", "ledger.json", "model.npz"):
        assert (tmp_path / "run" / name).exists()
    path = plot_bounds([no_noise, strong_noise], tmp_path / "both.png")
    assert path.stat().st_size > 0
    assert json.loads(json.dumps(report([no_noise, strong_noise], path)))["audits"][1]["level"] == CLIENT


def test_impossible_audits_are_refused() -> None:
    dpsgd = ExperimentConfig(**SMALL, dp=DPMode.LOCAL, privacy=PrivacySettings(noise_multiplier=1.0))
    with pytest.raises(ConfigError, match="client-level"):
        audit_job(dpsgd, 10, level=CLIENT)
    with pytest.raises(ConfigError, match="level"):
        audit_job(ExperimentConfig(**SMALL), 10, level="round")
    with pytest.raises(ConfigError, match="at least 2"):
        audit_job(ExperimentConfig(**SMALL), 1)


def test_secagg_audit_empirical_reruns_the_stored_run_with_canaries(tmp_path, capsys):
    import json as _json

    from federation.cli import main

    out = tmp_path / "run"
    assert main(["run", "--clients", "3", "--rounds", "1", "--local-epochs", "1", "--dp", "central",
                 "--noise-multiplier", "4", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["audit", str(out), "--empirical", "--canaries", "60", "--no-prv", "--json"]) == 0
    report = _json.loads(capsys.readouterr().out)
    (audit,) = report["empirical"]["audits"]
    assert audit["level"] == "client" and audit["m"] == 60
    assert audit["epsilon_lower"] <= audit["epsilon_upper"]
    assert (out / "empirical" / "empirical.json").exists() and (out / "ledger.json").exists()


def test_audit_empirical_without_a_run_is_a_clear_error(tmp_path, capsys):
    from dp.events import GaussianEvent
    from dp.ledger import LEDGER_NAME, PrivacyLedger
    from federation.cli import main

    ledger = PrivacyLedger(1e-5)
    ledger.commit(1, {0: [GaussianEvent(1.0)]}, tmp_path / LEDGER_NAME)
    assert main(["audit", str(tmp_path), "--empirical"]) == 2
    assert "needs the settings of a secagg run" in capsys.readouterr().err
