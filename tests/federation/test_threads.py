"""The thread policy: explicit counts are used, small models train with one thread, torch's setting returns."""

import pytest
import torch

from federation.errors import ConfigError
from federation.threads import SMALL_MODEL_PARAMS, intra_op_threads, policy_threads


def test_policy_defaults_to_one_thread_for_small_models_only():
    assert policy_threads(None, 4810) == 1
    assert policy_threads(None, SMALL_MODEL_PARAMS) is None
    assert policy_threads(3, 10) == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_policy_refuses_what_is_not_a_thread_count(bad):
    with pytest.raises(ConfigError):
        policy_threads(bad, 10)


def test_setting_holds_inside_the_block_and_is_restored():
    before = torch.get_num_threads()
    with intra_op_threads(None, 100):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(1, 100):
        raise RuntimeError("training failed")
    assert torch.get_num_threads() == before


def test_federation_trains_its_clients_with_the_chosen_threads():
    from torch.utils.data import DataLoader, TensorDataset

    from federation import Federation

    seen = []

    def train(model, loader, optimizer):
        seen.append(torch.get_num_threads())

    model = torch.nn.Linear(3, 2)
    data = TensorDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    federation = Federation(model, rounds=1, threads=1)
    federation.add_client(DataLoader(data), torch.optim.SGD(model.parameters(), lr=0.1), train)
    federation.run()
    assert seen == [1]
    with pytest.raises(ConfigError):
        Federation(model, threads=0)
