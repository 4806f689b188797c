"""Differential privacy through the round loop: ledger, budgets, resume, DP-SGD, and secagg audit."""

import json

import numpy as np
import pytest

from dp.accounting import RDPAccountant
from dp.events import GaussianEvent, PoissonSampledGaussianEvent
from dp.ledger import LEDGER_NAME, POPULATION, PrivacyLedger
from federation.cli import main
from federation.errors import ConfigError
from federation.experiment import DPMode, PrivacySettings, SecureMode, build_federation

from tests.federation.helpers import small_config


def dp_config(dp=DPMode.CENTRAL, secure=SecureMode.NONE, **privacy):
    settings = PrivacySettings(**({"noise_multiplier": 1.0} | privacy))
    return small_config(rounds=3, dp=dp, secure=secure, privacy=settings)


@pytest.mark.parametrize("dp, secure", [(DPMode.CENTRAL, SecureMode.NONE), (DPMode.CENTRAL, SecureMode.MASK),
                                        (DPMode.DISTRIBUTED, SecureMode.CKKS), (DPMode.DISTRIBUTED, SecureMode.MASK),
                                        (DPMode.LOCAL, SecureMode.NONE)])
def test_every_mode_trains_and_fills_the_ledger(tmp_path, dp, secure):
    fed = build_federation(dp_config(dp, secure), tmp_path)
    history = fed.run()
    assert all(h.status.value == "ok" for h in history)
    ledger = PrivacyLedger.load(tmp_path / LEDGER_NAME)
    assert {r for r, _, _ in ledger.entries} == {1, 2, 3}
    summary = fed.history.privacy_summary()
    assert set(summary["per_client"]) == {"0", "1", "2", "3"}
    assert summary["epsilon_population"] > 0
    if dp is DPMode.LOCAL:
        assert POPULATION not in ledger.parties()
        event = ledger.events[0]
        assert isinstance(event, PoissonSampledGaussianEvent) and event.noise_multiplier == 1.0
        assert event.sampling_rate == pytest.approx(1 / 12)  # Opacus: 1 / batches per epoch (359 examples, 32)
    else:
        assert ledger.epsilon(POPULATION) == pytest.approx(summary["epsilon_population"])


def test_resume_continues_the_ledger_without_double_counting(tmp_path):
    build_federation(small_config(rounds=2, dp=DPMode.CENTRAL, privacy=PrivacySettings(noise_multiplier=1.0)),
                     tmp_path).run()
    fed = build_federation(small_config(rounds=4, dp=DPMode.CENTRAL, privacy=PrivacySettings(noise_multiplier=1.0)),
                           tmp_path)
    fed.run(resume=True)
    ledger = PrivacyLedger.load(tmp_path / LEDGER_NAME)
    population_rounds = [r for r, party, _ in ledger.entries if party == POPULATION]
    assert population_rounds == [1, 2, 3, 4]


def test_clients_decline_and_the_server_stops_at_the_budget(tmp_path):
    cfg = small_config(rounds=10, dp=DPMode.CENTRAL, privacy=PrivacySettings(noise_multiplier=2.0, max_epsilon=4.0))
    fed = build_federation(cfg, tmp_path)
    history = fed.run()
    assert 0 < len(history) < 10
    assert fed.privacy.ledger.epsilon(POPULATION) <= 4.0
    assert all(fed.privacy.ledger.epsilon(c) <= 4.0 for c in range(4))


def test_local_clients_decline_rounds_over_budget():
    cfg = small_config(rounds=6, dp=DPMode.LOCAL, privacy=PrivacySettings(noise_multiplier=1.0, max_epsilon=2.0))
    fed = build_federation(cfg)
    history = fed.run()
    assert fed.privacy.declined  # some clients declined
    assert all(fed.privacy.ledger.epsilon(c) <= 2.0 for c in range(4))
    assert history[-1].status.value in ("ok", "aborted")


def test_target_epsilon_picks_a_noise_multiplier_that_meets_it(tmp_path):
    fed = build_federation(small_config(rounds=3, dp=DPMode.CENTRAL, privacy=PrivacySettings(
        noise_multiplier=None, target_epsilon=8.0)), tmp_path)
    fed.run()
    assert fed.privacy.ledger.epsilon(POPULATION) == pytest.approx(8.0, rel=0.05)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dp=DPMode.CENTRAL), "needs --noise-multiplier"),
    (dict(dp=DPMode.NONE, privacy=PrivacySettings(noise_multiplier=1.0)), "without --dp"),
    (dict(dp=DPMode.DISTRIBUTED, secure=SecureMode.NONE, privacy=PrivacySettings(noise_multiplier=1.0)),
     "needs --secure mask or ckks"),
    (dict(dp=DPMode.DISTRIBUTED, secure=SecureMode.MASK,
          privacy=PrivacySettings(noise_multiplier=1.0, adaptive_quantile=0.5)), "central only"),
])
def test_impossible_privacy_configurations(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        small_config(**kwargs)


def test_adaptive_clipping_through_the_round_loop(tmp_path):
    cfg = small_config(rounds=4, dp=DPMode.CENTRAL, secure=SecureMode.MASK,
                       privacy=PrivacySettings(noise_multiplier=1.0, clip=0.01, adaptive_quantile=0.5))
    fed = build_federation(cfg, tmp_path)
    assert all(h.status.value == "ok" for h in fed.run())
    # every update norm exceeds a clip of 0.01, so the clip can only have grown, by up to e^0.1 a round
    assert 0.01 < fed.aggregator.clip < 0.01 * np.exp(0.2 * 0.5 * 4) * 1.5
    expected = RDPAccountant()
    for _ in range(4):
        expected.compose(GaussianEvent(1.0))  # the count and the update together cost z = 1 a round
    assert fed.privacy.ledger.epsilon(POPULATION) == pytest.approx(expected.epsilon(1e-5))


def test_privacy_settings_are_validated():
    with pytest.raises(ConfigError, match="quantile"):
        PrivacySettings(noise_multiplier=1.0, adaptive_quantile=1.5)
    with pytest.raises(ConfigError, match="count noise"):
        PrivacySettings(noise_multiplier=1.0, adaptive_quantile=0.5, count_noise=0.0)
    with pytest.raises(ConfigError, match="exactly one"):
        PrivacySettings()
    with pytest.raises(ConfigError):
        PrivacySettings(noise_multiplier=-1.0)
    with pytest.raises(ConfigError):
        PrivacySettings(noise_multiplier=1.0, delta=1.0)


def test_run_and_audit_from_the_command_line(tmp_path, capsys):
    assert main(["run", "--dp", "central", "--noise-multiplier", "1.0", "--clients", "4", "--rounds", "2",
                 "--local-epochs", "1", "--quiet", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    privacy = doc["privacy"]
    assert privacy["delta"] == 1e-5 and set(privacy["per_client"]) == {"0", "1", "2", "3"}
    assert main(["audit", str(tmp_path / LEDGER_NAME), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["population"]["epsilon_rdp"] == pytest.approx(privacy["epsilon_population"])
    assert report["population"]["epsilon_prv"] < report["population"]["epsilon_rdp"]
    assert report["population"]["rounds"] == 2
    assert (tmp_path / "epsilon.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["audit", str(tmp_path)]) == 0
    assert "population" in capsys.readouterr().out


def test_ad_hoc_audit(capsys):
    assert main(["audit", "--noise-multiplier", "1.5", "--sample-rate", "0.04", "--steps", "2250",
                 "--delta", "1e-5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["delta"] == 1e-5
    assert out["epsilon"]["rdp"] == pytest.approx(7.3291, rel=0.01)
    assert out["epsilon"]["prv"] == pytest.approx(6.78, rel=0.02)


@pytest.mark.parametrize("args, match", [
    (["--noise-multiplier", "1.0"], "give a ledger"),
    (["--noise-multiplier", "-1", "--sample-rate", "0.1", "--steps", "3", "--delta", "1e-5"], "noise multiplier"),
])
def test_audit_bad_input(args, match, capsys):
    assert main(["audit", *args]) == 2
    assert match in capsys.readouterr().err


def test_audit_of_a_corrupt_ledger(tmp_path, capsys):
    (tmp_path / LEDGER_NAME).write_text("{broken")
    assert main(["audit", str(tmp_path)]) == 2
    assert "unreadable ledger" in capsys.readouterr().err


def test_a_ledger_that_cannot_be_written_stops_the_release_and_keeps_the_file(tmp_path, monkeypatch):
    import errno
    import os

    from federation.errors import OutputError
    from federation.privacy import PrivacyBook
    from federation.runtime import ClientReport, RoundOutcome
    from secagg.aggregation import AggregateResult

    book = PrivacyBook(PrivacyLedger(1e-5), tmp_path)
    outcome = RoundOutcome(AggregateResult(np.zeros(2, np.float32), 2.0, (0, 1)), None,
                           {0: ClientReport(0), 1: ClientReport(1)}, 0.0, [GaussianEvent(1.0)])
    book.record(1, outcome)
    kept = (tmp_path / LEDGER_NAME).read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="No space left on device") as raised:
        book.record(2, outcome)
    monkeypatch.undo()
    assert raised.value.path == tmp_path / LEDGER_NAME
    assert (tmp_path / LEDGER_NAME).read_bytes() == kept
    assert [p.name for p in tmp_path.iterdir()] == [LEDGER_NAME]
