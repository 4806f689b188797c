"""The ServerApp and the ClientApps in one process: our round logic through Flower messages, without
SuperLink or SuperNode processes (the grid hands each message to the node's handler). Fast enough to run
every mode, the built-in job and the app template; the real processes are in test_flower_runtime.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Message, RecordDict  # noqa: E402

from federation.errors import ConfigError, RuntimeFailure  # noqa: E402
from federation.experiment import ExperimentConfig, SecureMode, build_federation  # noqa: E402
from federation.flower import client_app, server_app  # noqa: E402
from federation.flower.job import KEY_HOLDER_ROLE, FlowerJob  # noqa: E402
from federation.params import get_vector  # noqa: E402

TEMPLATE = "federation.flower.app_template"


class InProcessGrid:
    """A Grid whose nodes are ClientApp contexts in this process; a message is answered by its handler."""

    def __init__(self, job: FlowerJob, node_configs: list[dict]) -> None:
        self.contexts = {n + 10: Context(run_id=1, node_id=n + 10, node_config=c, state=RecordDict(),
                                         run_config=job.run_config()) for n, c in enumerate(node_configs)}
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: list[Message]) -> list[str]:
        """Answer each message at once (the reply waits for :meth:`pull_messages`); its id is returned."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{len(self.replies)}"  # as Flower sets it when sent
            handler = getattr(client_app, message.metadata.message_type.split(".", 1)[1])
            self.replies[message.metadata.message_id] = handler(message, self.contexts[message.metadata.dst_node_id])
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: list[str]) -> list[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]


@pytest.fixture(autouse=True)
def flower_messages(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)


def _nodes(clients: int, secure: SecureMode) -> list[dict]:
    nodes: list[dict] = [{"partition-id": i} for i in range(clients)]
    return nodes + ([{"role": KEY_HOLDER_ROLE}] if secure is SecureMode.CKKS else [])


def _run(job: FlowerJob) -> tuple[list[dict], np.ndarray, InProcessGrid]:
    grid = InProcessGrid(job, _nodes(job.config.clients, job.config.secure))
    server_app.run(grid, job)
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    with np.load(job.out / "checkpoint.npz", allow_pickle=False) as ckpt:
        return rounds, ckpt["params"], grid


@pytest.fixture
def long_lived(monkeypatch):
    """The nodes' ClientApp as one long-lived process serves it (federation.flower.executor): the client and the
    sessions stay live objects, nothing is suspended between stages."""
    from federation.flower.live import LIVE

    monkeypatch.setattr(LIVE, "enabled", True)
    yield LIVE
    LIVE.clear()


@pytest.mark.parametrize("secure", [SecureMode.NONE, SecureMode.MASK, SecureMode.CKKS])
@pytest.mark.parametrize("process", ["per-message", "long-lived"])
def test_the_template_app_trains_under_every_protection_mode(tmp_path, secure, process, request):
    if process == "long-lived":
        request.getfixturevalue("long_lived")
    config = ExperimentConfig(clients=3, rounds=2, local_epochs=1, hidden=8, lr=0.2, secure=secure, seed=1)
    rounds, params, grid = _run(FlowerJob(config, tmp_path / "out", app=TEMPLATE))
    suspended = {c.state["secagg.node"].get("session") is not None for c in grid.contexts.values()
                 if "partition-id" in c.node_config}
    assert suspended == {secure is not SecureMode.NONE and process == "per-message"}
    assert [r["status"] for r in rounds] == ["ok", "ok"]
    assert all(r["survivors"] == 3 and not r["rejected"] for r in rounds)
    assert rounds[-1]["accuracy"] > 0.5  # four well-separated classes: far above chance after two rounds
    # the bound every node pinned is the largest shard the clients reported (120, 160, 200 examples)
    from federation.flower.enrolment import pinned_weight_bound
    from federation.flower.node import NodeState

    assert {pinned_weight_bound(NodeState(c)) for c in grid.contexts.values()} == {200.0}
    settings = json.loads((tmp_path / "out" / "results.json").read_text())
    assert TEMPLATE in json.dumps(settings)


def test_the_built_in_job_equals_the_in_process_run(tmp_path):
    config = ExperimentConfig(clients=2, rounds=1, local_epochs=1, secure=SecureMode.MASK, seed=3)
    rounds, params, _ = _run(FlowerJob(config, tmp_path / "out"))
    federation = build_federation(config)
    history = federation.run()
    assert [r["accuracy"] for r in rounds] == pytest.approx([h.accuracy for h in history], abs=1e-9)
    np.testing.assert_allclose(params, get_vector(federation.model), atol=1e-4)  # fixed-point rounding


def test_a_client_the_server_does_not_know_of_is_refused_at_the_greeting(tmp_path):
    config = ExperimentConfig(clients=2, rounds=1, local_epochs=1, hidden=8)
    job = FlowerJob(config, tmp_path / "out", app=TEMPLATE)
    grid = InProcessGrid(job, [{"partition-id": 0}, {"partition-id": 5}])
    with pytest.raises(ConfigError, match="client index 5 outside 0..1"):
        server_app.run(grid, job)



def test_a_client_reporting_no_examples_is_refused_before_enrolment(tmp_path, monkeypatch):
    from types import SimpleNamespace

    config = ExperimentConfig(clients=2, rounds=1, local_epochs=1, hidden=8, secure=SecureMode.MASK)
    job = FlowerJob(config, tmp_path / "out", app=TEMPLATE)
    monkeypatch.setattr(client_app, "node_client", lambda job, index: SimpleNamespace(num_examples=index, loader=range(index)))
    grid = InProcessGrid(job, _nodes(2, SecureMode.MASK))
    with pytest.raises(ConfigError, match="client 0 on SuperNode 10 has no examples"):
        server_app.run(grid, job)
    assert all(c.state["secagg.node"].get("directory") is None for c in grid.contexts.values())


class SilentKeyHolderGrid(InProcessGrid):
    """The key holder answers no decryption request in the rounds listed in ``silent`` (None: in none); with
    ``gone``, the grid also stops listing its node once it fell silent (a SuperLink that noticed)."""

    def __init__(self, job: FlowerJob, silent: set[int] | None = None, gone: bool = False) -> None:
        super().__init__(job, _nodes(job.config.clients, SecureMode.CKKS))
        self.key_holder = max(self.contexts)
        self.silent, self.gone, self.fell_silent = silent, gone, False

    def get_node_ids(self) -> list[int]:
        return [n for n in self.contexts if not (self.gone and self.fell_silent and n == self.key_holder)]

    def push_messages(self, messages: list[Message]) -> list[str]:
        def answered(m: Message) -> bool:
            quiet = m.metadata.message_type == "query.decrypt" and (
                self.silent is None or int(m.metadata.group_id) in self.silent)
            self.fell_silent |= quiet
            return not quiet

        ids = super().push_messages([m for m in messages if answered(m)])
        return ids + [f"unanswered-{len(ids) + i}" for i in range(len(messages) - len(ids))]


@pytest.mark.parametrize("gone, rounds_run", [(False, 2), (True, 1)])
def test_a_dead_key_holder_stops_the_run_with_a_clear_error(tmp_path, gone, rounds_run):
    config = ExperimentConfig(clients=2, rounds=4, local_epochs=1, hidden=8, secure=SecureMode.CKKS, seed=1)
    job = FlowerJob(config, tmp_path / "out", app=TEMPLATE, stage_timeout=0.2)  # silence: waited out
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=job.run_config())
    with pytest.raises(RuntimeFailure, match="no round can be decrypted without it") as raised:
        server_app.main(SilentKeyHolderGrid(job, gone=gone), context)
    reason = "left the SuperLink" if gone else "did not answer 2 decryption requests in a row"
    assert reason in str(raised.value)
    assert reason in (job.out / "failed.txt").read_text()  # what secagg run reports, exiting 2
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    assert [r["status"] for r in rounds] == ["aborted"] * rounds_run  # the rounds it waited out, saved


def test_a_key_holder_silent_once_is_waited_for(tmp_path):
    config = ExperimentConfig(clients=2, rounds=3, local_epochs=1, hidden=8, secure=SecureMode.CKKS, seed=1)
    job = FlowerJob(config, tmp_path / "out", app=TEMPLATE, stage_timeout=0.2)  # silence: waited out
    server_app.run(SilentKeyHolderGrid(job, silent={2}), job)
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    assert [r["status"] for r in rounds] == ["ok", "aborted", "ok"]
