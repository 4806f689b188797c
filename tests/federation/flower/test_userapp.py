"""The run configuration a Flower job carries, and the user's app module: parsed, refused, run (no processes)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, RecordDict  # noqa: E402

from federation.errors import ConfigError  # noqa: E402
from federation.experiment import DPMode, ExperimentConfig, PrivacySettings, SecureMode  # noqa: E402
from federation.flower import app_template  # noqa: E402
from federation.flower.codec import encode_directory  # noqa: E402
from federation.flower.enrolment import Enrolment, pin  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from federation.flower.node import NodeState  # noqa: E402
from federation.flower.userapp import ClientJob, ServerJob, load_app, node_client  # noqa: E402
from federation.strategy import Strategy, StrategyName  # noqa: E402
from secagg.errors import ProtocolError  # noqa: E402

TEMPLATE = "federation.flower.app_template"


def _context(run_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=run_config)


def test_the_configuration_round_trips_through_the_run_config_and_is_parsed_once(tmp_path):
    config = ExperimentConfig(clients=4, rounds=3, secure=SecureMode.MASK, seed=9, clients_per_round=0.5,
                              strategy=Strategy(StrategyName.FEDADAM, server_lr=0.05))
    job = FlowerJob(config, tmp_path, app=TEMPLATE, stage_timeout=30.0, connect_timeout=60.0)
    run_config = job.run_config()
    assert json.loads(str(run_config["config"])) == config.to_dict()
    again = FlowerJob.from_context(_context(run_config))
    assert again == job and again.config == config
    assert FlowerJob.from_context(_context(run_config)).config is again.config  # cached per JSON text
    assert FlowerJob.from_context(_context({**run_config, "app": ""})).app is None


@pytest.mark.parametrize("change, message", [
    (dict(config="{not json"), "not JSON"),
    (dict(config=json.dumps({"clients": 3, "epochs": 2})), r"unknown settings \['epochs'\]"),
    (dict(config=json.dumps({"secure": "rot13"})), "bad run configuration"),
    (dict(config="[]"), "bad run configuration"),
    (dict(config=json.dumps({"clients": 0})), "at least one client"),
    (dict(app="os; rm -rf"), "not a module path"),
    (dict(app="../evil"), "not a module path"),
    (dict(out=None), "bad run configuration"),
])
def test_a_bad_run_configuration_is_a_config_error(tmp_path, change, message):
    run_config = {**FlowerJob(ExperimentConfig(), tmp_path).run_config(), **change}
    run_config = {k: v for k, v in run_config.items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        FlowerJob.from_context(_context(run_config))


def test_what_flower_does_not_run_is_refused_when_the_job_is_made(tmp_path):
    simulated = ExperimentConfig(dropout=0.2)
    with pytest.raises(ConfigError, match="real dropouts only"):
        FlowerJob(simulated, tmp_path)
    run_config = {**FlowerJob(ExperimentConfig(), tmp_path).run_config(), "config": json.dumps(simulated.to_dict())}
    with pytest.raises(ConfigError, match="real dropouts only"):
        FlowerJob.from_context(_context(run_config))
    dp = ExperimentConfig(dp=DPMode.CENTRAL, privacy=PrivacySettings(noise_multiplier=1.0))
    assert FlowerJob(dp, tmp_path).config.privacy == dp.privacy  # DP runs on Flower


def test_an_app_that_is_not_installed_or_lacks_its_functions_is_refused(monkeypatch):
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_app("no_such_package.fedjob")
    half = types.ModuleType("half_app")
    half.client = lambda partition_id, config: None  # no server()
    monkeypatch.setitem(sys.modules, "half_app", half)
    with pytest.raises(ConfigError, match="defines no server"):
        load_app("half_app")
    assert load_app(TEMPLATE).client is app_template.client


def test_an_app_whose_client_returns_something_else_is_refused(tmp_path, monkeypatch):
    wrong = types.ModuleType("wrong_app")
    wrong.client = lambda partition_id, config: ("model", "optimizer")
    wrong.server = lambda config: None
    monkeypatch.setitem(sys.modules, "wrong_app", wrong)
    with pytest.raises(ConfigError, match="not a ClientJob"):
        node_client(FlowerJob(ExperimentConfig(clients=2), tmp_path, app="wrong_app"), 0)
    with pytest.raises(ConfigError, match="outside 0..1"):
        node_client(FlowerJob(ExperimentConfig(clients=2), tmp_path, app=TEMPLATE), 2)


def test_the_template_trains_on_its_own_data_and_the_server_has_the_same_model(tmp_path):
    config = ExperimentConfig(clients=3, local_epochs=2, hidden=8, lr=0.2)
    job = app_template.client(1, config)
    assert isinstance(job, ClientJob) and len(job.loader.dataset) == 160
    server = app_template.server(config)
    assert isinstance(server, ServerJob) and len(server.test_data) == 400
    shapes = [p.shape for p in server.model.parameters()]
    assert [p.shape for p in job.model.parameters()] == shapes
    client = node_client(FlowerJob(config, tmp_path, app=TEMPLATE), 1)
    start = np.concatenate([p.detach().numpy().ravel() for p in server.model.parameters()])
    result = client.fit(start, seed=3)
    assert result.num_examples == 160 and result.delta.shape == start.shape and np.any(result.delta)
    assert result.train_loss is not None and result.train_loss > 0


def test_the_template_reads_a_node_s_own_files(tmp_path, monkeypatch):
    x, y = np.ones((5, app_template.FEATURES)), np.arange(5) % app_template.CLASSES
    np.savez(tmp_path / "train-0.npz", x=x, y=y)
    monkeypatch.setenv("SECAGG_APP_DATA", str(tmp_path))
    data = app_template.load_data("train-0", ExperimentConfig())
    assert len(data) == 5 and data[4][1].item() == 0


@pytest.mark.parametrize("bound", [0.0, -3.0, float("nan"), float("inf")])
def test_a_weight_bound_that_is_not_a_positive_number_is_never_pinned(bound):
    from types import SimpleNamespace

    node = NodeState(SimpleNamespace(state={}))
    with pytest.raises(ProtocolError, match="weight bound"):
        pin(node, Enrolment(encode_directory({}), weight_bound=bound))
    assert node.get("weight_bound") is None and node.get("directory") is None
