import numpy as np
import pytest

from federation.errors import ConfigError
from federation.strategy import ServerOptimizer, Strategy, StrategyName


def run(strategy, deltas, params=None):
    params = np.zeros(len(deltas[0]), np.float32) if params is None else params
    opt = ServerOptimizer(strategy, params.size)
    for d in deltas:
        params = opt.step(params, np.asarray(d, np.float32))
    return params


def test_fedavg_applies_mean_delta():
    np.testing.assert_allclose(run(Strategy(), [[1.0, -2.0]]), [1.0, -2.0])
    np.testing.assert_allclose(run(Strategy(server_lr=0.5), [[1.0, -2.0]]), [0.5, -1.0])


def test_fedavgm_accumulates_momentum():
    s = Strategy(StrategyName.FEDAVGM, momentum=0.5)
    # v1 = 1, x1 = 1; v2 = 0.5 + 1 = 1.5, x2 = 2.5
    np.testing.assert_allclose(run(s, [[1.0], [1.0]]), [2.5])


def test_fedadam_matches_hand_computation():
    s = Strategy(StrategyName.FEDADAM, server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    d = 0.2
    m = 0.1 * d
    v = 0.99 * 1e-6 + 0.01 * d * d
    np.testing.assert_allclose(run(s, [[d]]), [0.1 * m / (np.sqrt(v) + 1e-3)], rtol=1e-6)


def test_fedyogi_matches_hand_computation():
    s = Strategy(StrategyName.FEDYOGI, server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    d = 0.2
    m = 0.1 * d
    v = 1e-6 - 0.01 * d * d * np.sign(1e-6 - d * d)
    np.testing.assert_allclose(run(s, [[d]]), [0.1 * m / (np.sqrt(v) + 1e-3)], rtol=1e-6)


def test_only_fedprox_asks_clients_for_a_proximal_term():
    assert Strategy(StrategyName.FEDPROX, proximal_mu=0.3).client_proximal_mu == 0.3
    assert Strategy(StrategyName.FEDADAM, proximal_mu=0.3).client_proximal_mu == 0.0


@pytest.mark.parametrize("kwargs", [dict(server_lr=0.0), dict(momentum=1.0), dict(beta2=-0.1), dict(tau=0.0),
                                    dict(proximal_mu=-1.0)])
def test_invalid_strategies(kwargs):
    with pytest.raises(ConfigError):
        Strategy(**kwargs)


def test_load_state_checks_keys_and_shapes():
    opt = ServerOptimizer(Strategy(StrategyName.FEDADAM), 3)
    with pytest.raises(ConfigError):
        opt.load_state({"m": np.zeros(3)})
    with pytest.raises(ConfigError):
        opt.load_state({"m": np.zeros(2), "v": np.zeros(3)})
