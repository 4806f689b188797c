import numpy as np
import pytest

from federation.errors import CheckpointError, ConfigError
from federation.experiment import SecureMode, build_federation
from federation.partition import PartitionScheme
from federation.params import get_vector
from federation.server import FederationConfig, RoundStatus
from federation.strategy import Strategy, StrategyName

from tests.federation.helpers import small_config


def final_params(config, checkpoint_dir=None, resume=False):
    fed = build_federation(config, checkpoint_dir)
    history = fed.run(resume=resume)
    return get_vector(fed.model), history


def test_same_seed_same_model():
    a, ha = final_params(small_config())
    b, hb = final_params(small_config())
    np.testing.assert_array_equal(a, b)
    assert [h.accuracy for h in ha] == [h.accuracy for h in hb]


@pytest.mark.parametrize("strategy", list(StrategyName))
def test_every_strategy_learns(strategy):
    params, history = final_params(small_config(rounds=4, strategy=Strategy(strategy)))
    assert history[-1].accuracy > 0.5
    assert history[-1].loss < history[0].loss


def test_resume_3_then_6_equals_6_uninterrupted(tmp_path):
    cfg = small_config(rounds=6, strategy=Strategy(StrategyName.FEDADAM), clients_per_round=3, dropout=0.34)
    straight, history = final_params(cfg)
    final_params(small_config(rounds=3, strategy=cfg.strategy, clients_per_round=3, dropout=0.34), tmp_path)
    resumed, resumed_history = final_params(cfg, tmp_path, resume=True)
    np.testing.assert_array_equal(straight, resumed)
    assert [h.round for h in resumed_history] == list(range(1, 7))
    assert [h.clients for h in resumed_history] == [h.clients for h in history]
    assert [h.dropped for h in resumed_history] == [h.dropped for h in history]


def test_crash_mid_round_then_resume_equals_uninterrupted(tmp_path):
    cfg = small_config(rounds=5)
    straight, _ = final_params(cfg)

    fed = build_federation(cfg, tmp_path)
    client = fed.clients[2]
    original = client.train_fn
    calls = {"n": 0}

    class PowerCut(BaseException):
        """The process dies: not an Exception, so no client-fault handler takes it for a bad client."""

    def crashing(model, loader, optimizer):
        calls["n"] += 1
        if calls["n"] == 4:  # client 2's fourth local training: round 4, mid-round
            raise PowerCut()
        return original(model, loader, optimizer)

    client.train_fn = crashing
    with pytest.raises(PowerCut):
        fed.run()
    resumed, history = final_params(cfg, tmp_path, resume=True)
    np.testing.assert_array_equal(straight, resumed)
    assert len(history) == 5


def test_resume_with_other_settings_is_refused(tmp_path):
    final_params(small_config(rounds=2), tmp_path)
    with pytest.raises(CheckpointError, match="different configuration"):
        final_params(small_config(rounds=4, lr=0.2), tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="past"):
        final_params(small_config(rounds=1), tmp_path, resume=True)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    _, history = final_params(small_config(rounds=2), tmp_path, resume=True)
    assert len(history) == 2


def test_sampling_and_dropout_counts():
    _, history = final_params(small_config(clients=6, clients_per_round=0.5, dropout=0.34, rounds=3))
    for h in history:
        assert len(h.clients) == 3 and len(h.dropped) == 1 and h.survivors == 2
        assert set(h.dropped) <= set(h.clients)
    assert len({tuple(h.clients) for h in history}) > 1 or len(history) == 1


def test_round_aborts_cleanly_when_too_few_survive():
    params_before = None
    fed = build_federation(small_config(rounds=2, clients=4, dropout=0.75, min_clients=2))
    params_before = get_vector(fed.model)
    history = fed.run()
    assert all(h.status is RoundStatus.ABORTED for h in history)
    assert "min_clients" in history[0].abort_reason
    np.testing.assert_array_equal(get_vector(fed.model), params_before)


@pytest.mark.parametrize("kwargs", [dict(rounds=0), dict(dropout=1.0), dict(clients_per_round=1.5),
                                    dict(clients_per_round=0), dict(min_clients=0), dict(local_epochs=0)])
def test_invalid_federation_config(kwargs):
    with pytest.raises(ConfigError):
        FederationConfig(**kwargs)


def test_impossible_sampling_is_refused():
    with pytest.raises(ConfigError, match="only 4 clients"):
        build_federation(small_config(clients_per_round=9)).run()
    with pytest.raises(ConfigError, match="min_clients"):
        build_federation(small_config(clients_per_round=2, min_clients=3)).run()


@pytest.mark.parametrize("strategy", list(StrategyName))
def test_masked_training_matches_plaintext_for_every_strategy(strategy):
    """Same clients, same seeds: the masked model differs only by quantization error."""
    kwargs = dict(rounds=4, clients=6, clients_per_round=4, strategy=Strategy(strategy))
    plain_params, plain = final_params(small_config(**kwargs))
    masked_params, masked = final_params(small_config(secure=SecureMode.MASK, **kwargs))
    assert [h.clients for h in plain] == [h.clients for h in masked]
    assert abs(plain[-1].accuracy - masked[-1].accuracy) <= 0.01
    assert np.abs(plain_params - masked_params).max() < 1e-3


def test_masked_training_with_dropout_matches_plaintext():
    """Dropouts at every stage (a client dropping after its masked input still counts)."""
    kwargs = dict(rounds=10, clients=10, dropout=0.2, local_epochs=2, partition=PartitionScheme.DIRICHLET)
    _, plain = final_params(small_config(**kwargs))
    _, masked = final_params(small_config(secure=SecureMode.MASK, **kwargs))
    assert [h.dropped for h in plain] == [h.dropped for h in masked]
    assert any(h.survivors > 8 for h in masked)  # some clients dropped only after sending their input
    assert abs(plain[-1].accuracy - masked[-1].accuracy) <= 0.01


@pytest.mark.parametrize("strategy", list(StrategyName))
def test_ckks_training_matches_plaintext_for_every_strategy(strategy):
    kwargs = dict(rounds=4, clients=6, clients_per_round=4, dropout=0.25, strategy=Strategy(strategy))
    plain_params, plain = final_params(small_config(**kwargs))
    ckks_params, ckks = final_params(small_config(secure=SecureMode.CKKS, **kwargs))
    assert [h.dropped for h in plain] == [h.dropped for h in ckks]  # a dropped client contributes nothing
    assert [h.survivors for h in plain] == [h.survivors for h in ckks] == [3, 3, 3, 3]
    assert abs(plain[-1].accuracy - ckks[-1].accuracy) <= 0.005
    assert np.abs(plain_params - ckks_params).max() < 1e-3


@pytest.mark.parametrize("secure", list(SecureMode))
def test_a_nan_update_is_rejected_and_the_round_goes_on(secure, caplog):
    import torch

    fed = build_federation(small_config(rounds=2, clients=4, secure=secure))
    original = fed.clients[1].train_fn

    def poisoned(model, loader, optimizer):
        original(model, loader, optimizer)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))

    fed.clients[1].train_fn = poisoned
    with caplog.at_level("WARNING"):
        history = fed.run()
    for h in history:
        assert h.status.value == "ok" and h.rejected == [1] and h.survivors == 3
        assert "NaN" in next(c["reason"] for c in h.per_client if c["client"] == 1)
    assert history[-1].accuracy > 0.5
    assert "client 1 rejected" in caplog.text
