"""The public API from user code: a user's own CNN, loaders and training function in every mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from federation import (CKKS, DPSGD, CentralDP, ConfigError, DistributedDP, EpochTrainer, Federation, Masking,
                        partition_dataset)
from secagg.masking import MaskingAggregator

x, y = load_digits(return_X_y=True)
DIGITS = TensorDataset(torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8), torch.tensor(y))
TRAIN, TEST = random_split(DIGITS, [1437, 360], generator=torch.Generator().manual_seed(0))


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 10))


def train(model, loader, optimizer):
    model.train()
    for xb, yb in loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        optimizer.step()


def federation(model=None, clients: int = 5, train_fn=train, lr: float = 0.1, momentum: float = 0.0,
               **kwargs) -> Federation:
    model = model or cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    fed = Federation(model, test_data=TEST, **{"rounds": 4, "local_epochs": 2, **kwargs})
    for shard in partition_dataset(TRAIN, num_clients=clients, alpha=0.5):
        fed.add_client(DataLoader(shard, batch_size=16, shuffle=True), optimizer, train_fn)
    return fed


@pytest.mark.parametrize("dp", [None, DPSGD(target_epsilon=5.0)], ids=["no-dp", "dp-sgd"])
def test_a_users_cnn_trains_in_every_protection_mode_with_equal_accuracy(dp):
    accuracy = {}
    for secure in (None, Masking(), CKKS()):
        fed = federation(secure=secure, dp=dp)
        history = fed.run()
        assert all(r.status.value == "ok" for r in history), [r.abort_reason for r in history]
        accuracy[type(secure).__name__] = history.final_accuracy
        if dp is not None:
            assert 4.5 < history.epsilon() <= 5.0  # calibrated to the target from the clients' loaders
    assert accuracy["NoneType"] > (0.7 if dp is None else 0.4)
    if dp is None:  # without noise, hiding the updates changes nothing but rounding
        assert accuracy["Masking"] == pytest.approx(accuracy["NoneType"], abs=0.01)
        assert accuracy["CKKS"] == pytest.approx(accuracy["NoneType"], abs=0.01)


def test_an_explicit_aggregator_too_small_for_the_clients_is_refused_before_training():
    calls = []

    def counting(model, loader, optimizer):
        calls.append(1)
        train(model, loader, optimizer)

    fed = federation(aggregator=MaskingAggregator(), train_fn=counting)
    with pytest.raises(ConfigError, match="weights up to 1.0"):
        fed.run()
    assert not calls


def test_dp_sgd_refuses_batch_norm_before_training_and_says_how_to_fix_it():
    from dp.errors import DPError

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    with pytest.raises(DPError, match="ModuleValidator.fix"):
        federation(model, dp=DPSGD(noise_multiplier=1.0)).run()


@pytest.mark.parametrize("kwargs, message", [
    (dict(dp=DistributedDP(noise_multiplier=1.0)), "needs secure"),
    (dict(secure=Masking(), clients_per_round=1), "at least 2 clients per round"),
    (dict(secure=CKKS(), clients=4, min_clients=5), "min_clients"),
    (dict(secure=Masking(), dp=DistributedDP(noise_multiplier=1.0), min_clients=6), "min_clients"),
    (dict(secure=CKKS(clip=0.1), dp=CentralDP(noise_multiplier=1.0, adaptive_quantile=0.5)), "adaptive"),
])
def test_what_the_clients_cannot_run_is_refused_up_front(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        federation(**kwargs).prepare()


def test_client_level_dp_weighs_clients_equally_and_central_noise_is_accounted():
    fed = federation(secure=Masking(), dp=CentralDP(noise_multiplier=2.0), rounds=2)
    history = fed.run()
    assert fed.aggregator.inner.config.max_weight == 1.0
    assert history.epsilon() == pytest.approx(history.epsilon(client=0))
    assert history.epsilon(delta=1e-3) < history.epsilon()
    assert history.epsilon(client=99) == 0.0


def test_metrics_callback_scheduler_and_early_stopping():
    def with_metrics(model, loader, optimizer):
        train(model, loader, optimizer)
        return {"loss": 1.5, "accuracy": 0.25}

    fed = federation(train_fn=with_metrics, rounds=5, local_epochs=1)
    optimizer = fed.clients[0].optimizer
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    seen = []

    def on_round(record):
        seen.append(record.round)
        scheduler.step()
        if record.round == 2:
            fed.stop()

    history = fed.run(on_round=on_round)
    assert seen == [1, 2] and len(history) == 2
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert history.client_metrics("accuracy")[0] == [(1, 0.25), (2, 0.25)]
    assert history[0].per_client[0]["train_loss"] == 1.5


@pytest.mark.parametrize("keep", [False, True])
def test_optimizer_state_is_fresh_each_round_unless_kept_per_client(keep):
    states: dict[int, list[bool]] = {}

    def recording(model, loader, optimizer):
        client = len(loader.dataset)  # shards differ in size: a stand-in for the client's identity
        states.setdefault(client, []).append(bool(optimizer.state))
        train(model, loader, optimizer)

    fed = federation(train_fn=recording, momentum=0.9, rounds=2, local_epochs=1, keep_optimizer_state=keep,
                     clients=3)
    fed.run()
    assert all(s == [False, keep] for s in states.values()), states


def test_epoch_trainer_adapts_the_pytorch_examples_signature():
    calls = []

    def example_train(args, model, device, loader, optimizer, epoch):
        calls.append((args["log_interval"], str(device), epoch))
        train(model, loader, optimizer)

    fed = federation(train_fn=EpochTrainer(example_train, {"log_interval": 10}), clients=2, rounds=2)
    fed.run()
    assert [c[2] for c in calls] == [1, 2, 3, 4, 5, 6, 7, 8]  # 2 clients share one trainer: 2 epochs x 2 rounds each
    assert calls[0][:2] == (10, "cpu")


def test_a_training_function_returning_something_else_is_a_clear_error():
    fed = federation(train_fn=lambda m, l, o: "done", rounds=1)
    history = fed.run()
    assert history[0].status.value == "aborted"
    assert all("training function returns" in c["reason"] for c in history[0].per_client)


def test_save_writes_what_the_cli_writes_and_audit_reads_it(tmp_path):
    from dp.audit import audit
    from dp.ledger import PrivacyLedger
    from federation.audit_cli import add_parser  # noqa: F401 - the audit command exists
    from federation.cli import main

    fed = federation(dp=DPSGD(noise_multiplier=1.0), rounds=2, clients=3)
    history = fed.run()
    out = fed.save(tmp_path / "run")
    assert {p.name for p in out.iterdir()} >= {"results.json", "ledger.json", "metrics.png", "model.npz"}
    doc = json.loads((out / "results.json").read_text())
    assert doc["privacy"]["epsilon_population"] == pytest.approx(history.epsilon())
    assert doc["config"]["dp"]["kind"] == "dpsgd" and len(doc["rounds"]) == 2
    report = audit(PrivacyLedger.load(out / "ledger.json"), prv=False)
    assert report is not None
    assert main(["audit", str(out / "ledger.json")]) == 0
    fed.save(out)  # the same run may save again
    other = federation(rounds=1, clients=2)
    other.run()
    with pytest.raises(ConfigError, match="another run"):
        other.save(out)
    other.save(out, overwrite=True)
    assert "ledger.json" not in {p.name for p in out.iterdir()}  # the replaced run's ledger went with it


def test_a_fresh_run_refuses_a_checkpoint_directory_of_another_run(tmp_path):
    first = federation(rounds=1, clients=2, checkpoint_dir=tmp_path)
    first.run()
    with pytest.raises(ConfigError, match="another run"):
        federation(rounds=1, clients=2, checkpoint_dir=tmp_path).run()
    resumed = federation(rounds=2, clients=2, checkpoint_dir=tmp_path)
    history = resumed.run(resume=True)
    assert len(history) == 2 and resumed.run_id == first.run_id
    replaced = federation(rounds=1, clients=2, checkpoint_dir=tmp_path, overwrite=True)
    assert len(replaced.run()) == 1 and replaced.run_id != first.run_id


def test_the_final_model_round_trips_as_a_state_dict_with_its_preprocessing(tmp_path):
    from federation import load_model

    fed = federation(rounds=1, clients=2, preprocessing={"scale": 1 / 16})
    fed.run()
    path = fed.save_model(tmp_path / "model.npz")
    fresh = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    state, preprocessing = load_model(path, fresh)
    assert preprocessing == {"scale": 1 / 16}
    for name, tensor in fed.model.state_dict().items():
        assert torch.equal(state[name], tensor) and torch.equal(fresh.state_dict()[name], tensor)
    with torch.no_grad():
        assert np.isclose(float(fresh(TEST[0][0][None]).sum()), float(fed.model(TEST[0][0][None]).sum()))


@pytest.mark.parametrize("target, batches", [(8.0, (1, 2)), (30.0, (1, 2, 5)), (3.0, (3, 7, 20))])
def test_dp_sgd_calibration_keeps_every_client_within_the_target(target, batches):
    from opacus.accountants import RDPAccountant

    from federation import protection

    population = protection.Population(tuple(16 * b for b in batches), batches, len(batches), rounds=2)
    z = protection.noise_multiplier(DPSGD(target_epsilon=target), population)
    for b in batches:
        accountant = RDPAccountant()
        accountant.history = [(z, 1.0 / b, 2 * b)]
        assert accountant.get_epsilon(1e-5) <= target * 1.001
