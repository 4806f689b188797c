"""DP on Flower: every DP mode through the ServerApp and the ClientApps (in one process, through the
``InProcessGrid`` of test_apps_in_process.py) spends what the in-process run of the same job spends, and the
nodes check the noise the server announces before they train or add noise with it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("flwr")

from dp.ledger import POPULATION, PrivacyLedger  # noqa: E402
from federation.experiment import (DPMode, ExperimentConfig, PrivacySettings, SecureMode,  # noqa: E402
                                   build_federation)
from federation.flower import server_app  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from tests.federation.flower.test_apps_in_process import (InProcessGrid, _nodes, flower_messages,  # noqa: E402,F401
                                                          long_lived)

MODES = [
    (DPMode.LOCAL, SecureMode.NONE, dict(noise_multiplier=0.8)),
    (DPMode.LOCAL, SecureMode.MASK, dict(target_epsilon=8.0)),
    (DPMode.CENTRAL, SecureMode.NONE, dict(target_epsilon=20.0)),
    (DPMode.CENTRAL, SecureMode.MASK, dict(noise_multiplier=0.3, adaptive_quantile=0.5, clip=0.5)),
    (DPMode.DISTRIBUTED, SecureMode.MASK, dict(target_epsilon=20.0)),
    (DPMode.DISTRIBUTED, SecureMode.CKKS, dict(noise_multiplier=0.3)),
]


def _config(dp: DPMode, secure: SecureMode, privacy: dict) -> ExperimentConfig:
    return ExperimentConfig(clients=3, rounds=2, local_epochs=1, hidden=16, secure=secure, dp=dp, seed=2,
                            privacy=PrivacySettings(**privacy))


def _flower(job: FlowerJob) -> tuple[list[dict], PrivacyLedger]:
    server_app.run(InProcessGrid(job, _nodes(job.config.clients, job.config.secure)), job)
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    return rounds, PrivacyLedger.load(job.out / "ledger.json")


@pytest.mark.parametrize("process", ["per-message", "long-lived"])
@pytest.mark.parametrize("dp, secure, privacy", MODES, ids=lambda v: getattr(v, "value", ""))
def test_a_flower_run_spends_what_the_in_process_run_spends(tmp_path, dp, secure, privacy, process, request):
    if process == "long-lived":
        request.getfixturevalue("long_lived")
    config = _config(dp, secure, privacy)
    rounds, ledger = _flower(FlowerJob(config, tmp_path / "flower"))
    history = build_federation(config, tmp_path / "in-process").run()
    assert [r["status"] for r in rounds] == [h.status.value for h in history] == ["ok", "ok"]
    assert [r["survivors"] for r in rounds] == [3, 3]
    expected = history.ledger
    assert sorted(ledger.parties(), key=str) == sorted(expected.parties(), key=str)
    for party in expected.parties():
        assert ledger.epsilon(party) == pytest.approx(expected.epsilon(party), rel=1e-12), party
    assert ledger.epsilon(POPULATION) == pytest.approx(expected.epsilon(POPULATION), rel=1e-12)
    # accuracy is not compared here: the noise is fresh in every run and these runs are small and noisy
    # (test_flower_dp_resume.py compares a real-process run's accuracy)


class TamperingGrid(InProcessGrid):
    """A server (or link) that rewrites what it sends (``outgoing(message)``) or what a node answered
    (``incoming(reply)``) before the other side reads it."""

    def __init__(self, job: FlowerJob, outgoing=None, incoming=None) -> None:
        super().__init__(job, _nodes(job.config.clients, job.config.secure))
        self.outgoing, self.incoming = outgoing or (lambda m: None), incoming or (lambda m: None)

    def push_messages(self, messages):
        for message in messages:
            self.outgoing(message)
        return super().push_messages(messages)

    def pull_messages(self, message_ids):
        replies = super().pull_messages(message_ids)
        for reply in replies:
            self.incoming(reply)
        return replies


def _record(message):
    return message.content.config_records["secagg"]


def _scale_noise(factor: float):
    def outgoing(message) -> None:
        if message.metadata.message_type == "query.enrol":
            _record(message)["noise_multiplier"] = _record(message)["noise_multiplier"] * factor
    return outgoing


@pytest.mark.parametrize("dp, secure, privacy", [
    (DPMode.LOCAL, SecureMode.NONE, dict(target_epsilon=8.0)),  # the client checks its own epsilon
    (DPMode.DISTRIBUTED, SecureMode.MASK, dict(target_epsilon=20.0)),  # it calibrates z itself
    (DPMode.CENTRAL, SecureMode.NONE, dict(noise_multiplier=1.0)),  # the configured z
    (DPMode.DISTRIBUTED, SecureMode.CKKS, dict(noise_multiplier=0.5)),  # the key holder checks it too
], ids=["dpsgd", "distributed-mask", "central", "distributed-ckks"])
def test_a_server_announcing_less_noise_is_refused_before_anyone_trains(tmp_path, dp, secure, privacy):
    from federation.errors import ConfigError

    job = FlowerJob(_config(dp, secure, privacy), tmp_path / "out")
    grid = TamperingGrid(job, outgoing=_scale_noise(0.9))
    with pytest.raises(ConfigError, match="did not accept the enrolment"):
        server_app.run(grid, job)
    assert not (job.out / "results.json").exists()  # nobody trained, nothing was released


def test_more_noise_than_needed_is_accepted(tmp_path):
    job = FlowerJob(_config(DPMode.DISTRIBUTED, SecureMode.MASK, dict(target_epsilon=20.0)), tmp_path / "out")
    server_app.run(TamperingGrid(job, outgoing=_scale_noise(1.5)), job)
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    assert [r["status"] for r in rounds] == ["ok", "ok"]


@pytest.mark.parametrize("dp, privacy", [
    (DPMode.DISTRIBUTED, dict(noise_multiplier=0.5)),  # noise shares sized for the configured clip
    (DPMode.CENTRAL, dict(noise_multiplier=0.5)),  # a clip that does not adapt
])
def test_a_round_clip_the_run_does_not_adapt_is_refused_by_every_client(tmp_path, dp, privacy):
    def outgoing(message) -> None:
        if message.metadata.message_type == "query.train":
            _record(message)["settings"] = json.dumps({"clip": 50.0})

    job = FlowerJob(_config(dp, SecureMode.MASK, privacy), tmp_path / "out")
    server_app.run(TamperingGrid(job, outgoing=outgoing), job)
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    assert [r["status"] for r in rounds] == ["aborted", "aborted"]
    reasons = [c["reason"] for c in rounds[0]["per_client"]]
    assert all("does not adapt" in reason for reason in reasons), reasons


def test_an_adapted_clip_reaches_the_clients(tmp_path):
    clips: list[float] = []

    def outgoing(message) -> None:
        if message.metadata.message_type == "query.train":
            clips.append(json.loads(_record(message)["settings"])["clip"])

    privacy = dict(noise_multiplier=0.3, adaptive_quantile=0.5, clip=0.5)
    job = FlowerJob(_config(DPMode.CENTRAL, SecureMode.NONE, privacy), tmp_path / "out")
    server_app.run(TamperingGrid(job, outgoing=outgoing), job)
    assert clips[:3] == [0.5] * 3 and len(set(clips[3:])) == 1 and clips[3] != 0.5  # moved after round 1


def test_a_client_reporting_other_privacy_events_is_rejected_and_still_charged(tmp_path):
    def incoming(reply) -> None:
        record = _record(reply)
        if reply.metadata.src_node_id == 10 and "events" in record:  # client 0
            record["events"] = json.dumps([])

    job = FlowerJob(_config(DPMode.LOCAL, SecureMode.NONE, dict(noise_multiplier=0.8)), tmp_path / "out")
    server_app.run(TamperingGrid(job, incoming=incoming), job)
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    assert [r["rejected"] for r in rounds] == [[0], [0]]
    assert all("the server accounts" in r["per_client"][0]["reason"] for r in rounds)
    ledger = PrivacyLedger.load(job.out / "ledger.json")
    assert ledger.epsilon(0) > 0  # what it trained with is charged even though its update was refused


def test_a_model_dp_sgd_cannot_train_is_refused_at_enrolment_with_the_reason(tmp_path, monkeypatch):
    import torch

    from federation.errors import ConfigError
    from federation.flower import client_app
    from federation.flower.userapp import node_client

    def with_batch_norm(job, index):
        client = node_client(job, index)
        client.model.add_module("norm", torch.nn.BatchNorm1d(10))
        return client

    monkeypatch.setattr(client_app, "node_client", with_batch_norm)
    job = FlowerJob(_config(DPMode.LOCAL, SecureMode.NONE, dict(noise_multiplier=1.0)), tmp_path / "out")
    with pytest.raises(ConfigError, match="did not accept the enrolment.*BatchNorm"):
        server_app.run(InProcessGrid(job, _nodes(3, SecureMode.NONE)), job)


@pytest.mark.parametrize("dp, secure", [(DPMode.LOCAL, SecureMode.MASK), (DPMode.DISTRIBUTED, SecureMode.CKKS)])
def test_the_user_s_own_app_trains_with_dp_on_the_nodes(tmp_path, dp, secure):
    from federation.flower import app_template

    config = _config(dp, secure, dict(noise_multiplier=0.5))
    job = FlowerJob(config, tmp_path / "out", app="federation.flower.app_template")
    rounds, ledger = _flower(job)
    assert [r["status"] for r in rounds] == ["ok", "ok"]
    examples = [len(app_template.load_data(f"train-{i}", config)) for i in range(3)]
    if dp is DPMode.LOCAL:  # each client charged its own DP-SGD: batches of its own shard, as it reported
        steps = [ledger.terms(c)[0] for c in range(3)]
        assert len({str(s) for s in steps}) == 3, (examples, steps)
    assert all(ledger.epsilon(c) > 0 for c in range(3))
