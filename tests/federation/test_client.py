import numpy as np
import pytest

from federation.errors import ConfigError
from federation.params import get_vector

from tests.federation.helpers import toy_client


def test_fit_returns_delta_from_global_and_metrics():
    client = toy_client()
    start = np.zeros_like(get_vector(client.model))
    result = client.fit(start, seed=1)
    np.testing.assert_allclose(result.delta, get_vector(client.model) - start, atol=1e-7)
    assert result.num_examples == 32 and result.train_loss is not None and result.seconds > 0
    assert np.abs(result.delta).sum() > 0


def test_fit_is_reproducible_for_a_seed():
    a = toy_client().fit(np.zeros(8, np.float32), seed=3).delta
    b = toy_client().fit(np.zeros(8, np.float32), seed=3).delta
    np.testing.assert_array_equal(a, b)


def test_fedprox_pulls_the_update_towards_the_global_model():
    free = toy_client().fit(np.zeros(8, np.float32), seed=3).delta
    prox = toy_client(mu=0.5).fit(np.zeros(8, np.float32), seed=3).delta
    assert np.linalg.norm(prox) < np.linalg.norm(free)


def test_proximal_hook_is_removed_after_fit():
    client = toy_client(mu=0.5)
    client.fit(np.zeros(8, np.float32), seed=3)
    assert not client.optimizer._optimizer_step_pre_hooks


def test_invalid_client_settings():
    c = toy_client()
    with pytest.raises(ConfigError):
        type(c)(c.model, c.optimizer, c.loader, c.train_fn, local_epochs=0)
    with pytest.raises(ConfigError):
        type(c)(c.model, c.optimizer, c.loader, c.train_fn, proximal_mu=-1)
