"""``--resume`` on Flower without processes: the ServerApp and ClientApps in one process (test_apps_in_process's
``InProcessGrid``), a run that dies after round 1 continued by a new deployment (new node ids, identity keys
and, with CKKS, a new key holder key pair), a resume with other settings refused, and the CLI taking a Flower
run's stored settings. The real processes (a SuperLink SIGKILLed, then resumed) are in test_resume_runtime.py."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Message, RecordDict  # noqa: E402

from federation.errors import CheckpointError, ConfigError  # noqa: E402
from federation.experiment import ExperimentConfig, SecureMode, build_federation  # noqa: E402
from federation.flower import server_app  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from federation.params import get_vector  # noqa: E402
from tests.federation.flower.test_apps_in_process import (  # noqa: E402, F401
    InProcessGrid, _nodes, flower_messages, long_lived)


class ServerAppDied(BaseException):
    """The ServerApp process gone (SIGKILL): nothing of it runs any more, no handler, no failed.txt."""


class Deployment(InProcessGrid):
    """New SuperNodes (ids from ``first_node``, fresh contexts: new identity keys and key holder) whose
    ServerApp dies when it starts round ``dies_at`` (None: never); ``rounds`` counts the train messages
    per round it carried."""

    def __init__(self, job: FlowerJob, first_node: int = 10, dies_at: int | None = None) -> None:
        super().__init__(job, _nodes(job.config.clients, job.config.secure))
        self.contexts = {n - 10 + first_node: Context(run_id=first_node, node_id=n - 10 + first_node,
                                                      node_config=c.node_config, state=RecordDict(),
                                                      run_config=c.run_config) for n, c in self.contexts.items()}
        self.dies_at, self.rounds = dies_at, {}

    def push_messages(self, messages: list[Message]) -> list[str]:
        for m in messages:
            if m.metadata.message_type == "query.train":
                r = int(m.metadata.group_id)
                if r == self.dies_at:
                    raise ServerAppDied(f"killed at the start of round {r}")
                self.rounds[r] = self.rounds.get(r, 0) + 1
        return super().push_messages(messages)


CONFIG = ExperimentConfig(clients=2, rounds=3, local_epochs=1, secure=SecureMode.MASK, seed=3, lr=0.2)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory) -> Path:
    """The files a Flower run (CONFIG) whose ServerApp died at the start of round 2 leaves."""
    from flwr.supercore.task_identity import TaskIdentity

    with pytest.MonkeyPatch.context() as patch:  # flower_messages, for this module-wide run
        for name in ("_run_id", "_node_id", "_task_id"):
            patch.setattr(TaskIdentity, name, 1, raising=False)
        job = FlowerJob(CONFIG, tmp_path_factory.mktemp("killed") / "out")
        with pytest.raises(ServerAppDied):
            server_app.run(Deployment(job, dies_at=2), job)
    return job.out


@pytest.fixture
def flower_run(killed_run, tmp_path) -> Path:
    """A copy of ``killed_run`` of this test's own."""
    import shutil

    return Path(shutil.copytree(killed_run, tmp_path / "out"))


def _results(out: Path) -> tuple[dict, np.ndarray]:
    with np.load(out / "checkpoint.npz", allow_pickle=False) as ckpt:
        return json.loads((out / "results.json").read_text()), ckpt["params"]


@pytest.mark.parametrize("secure, process", [(SecureMode.MASK, "per-message"), (SecureMode.CKKS, "per-message"),
                                             (SecureMode.CKKS, "long-lived")])
def test_a_resumed_server_app_continues_from_the_checkpoint(tmp_path, secure, process, request):
    if process == "long-lived":  # the client and the key holder as live objects, kept per run id
        request.getfixturevalue("long_lived")
    config = ExperimentConfig(clients=2, rounds=2, local_epochs=1, secure=secure, seed=3)
    job = FlowerJob(config, tmp_path / "out")
    with pytest.raises(ServerAppDied):
        server_app.run(Deployment(job, dies_at=2), job)
    first, _ = _results(job.out)
    assert [r["round"] for r in first["rounds"]] == [1]
    assert not (job.out / "done.json").exists()

    resumed = FlowerJob(config, job.out, resume=True)
    grid = Deployment(resumed, first_node=50)
    server_app.run(grid, resumed)
    doc, params = _results(job.out)
    assert grid.rounds == {2: 2}  # round 1 was not run again
    assert doc["run_id"] == first["run_id"] and doc["rounds"][0] == first["rounds"][0]
    assert [r["status"] for r in doc["rounds"]] == ["ok"] * 2
    assert json.loads((job.out / "done.json").read_text()) == {"rounds": 2}

    expected = build_federation(config)
    history = expected.run()
    assert [r["clients"] for r in doc["rounds"]] == [h.clients for h in history]
    assert [r["accuracy"] for r in doc["rounds"]] == pytest.approx([h.accuracy for h in history], abs=0.01)
    # masking's stochastic rounding (CKKS's noise) differs between any two runs by ~1e-6, and a round of training
    # on top can tip a unit near its ReLU boundary (~2e-4 here, as between two in-process runs): not 1e-4
    np.testing.assert_allclose(params, get_vector(expected.model), atol=2e-3)


def test_a_resume_with_another_configuration_is_refused(flower_run):
    before = (flower_run / "checkpoint.npz").read_bytes(), (flower_run / "results.json").read_bytes()
    other = FlowerJob(replace(CONFIG, lr=0.3), flower_run, resume=True)
    grid = Deployment(other, first_node=50)
    with pytest.raises(CheckpointError, match="different configuration"):
        server_app.run(grid, other)
    assert grid.rounds == {}  # refused before any round
    assert ((flower_run / "checkpoint.npz").read_bytes(), (flower_run / "results.json").read_bytes()) == before


def test_a_fresh_run_never_replaces_a_checkpointed_one(flower_run):
    job = FlowerJob(CONFIG, flower_run)
    grid = Deployment(job, first_node=50)
    with pytest.raises(ConfigError, match="resume=True"):
        server_app.run(grid, job)
    assert grid.rounds == {}


def test_the_run_configuration_carries_resume():
    from federation.flower.launcher import _toml_value

    config = ExperimentConfig(clients=2, rounds=1)
    for resume in (False, True):
        rc = FlowerJob(config, Path("out"), resume=resume).run_config()
        context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=rc)
        assert FlowerJob.from_context(context).resume is resume
        assert _toml_value(rc["resume"]) == ("true" if resume else "false")
    bad = {**FlowerJob(config, Path("out")).run_config(), "resume": "yes"}
    with pytest.raises(ConfigError, match="resume must be true or false"):
        FlowerJob.from_context(Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=bad))


def test_the_cli_resumes_a_flower_run_with_its_stored_settings(flower_run, monkeypatch):
    from federation import cli
    from federation.flower import command

    seen = {}
    monkeypatch.setattr(command, "flower_command", lambda args, config: seen.update(args=args, config=config) or 0)
    assert cli.main(["run", "--resume", "--quiet", "--out", str(flower_run)]) == 0  # --runtime flower: stored
    args, config = seen["args"], seen["config"]
    assert args.runtime == "flower" and args.resume and args.app is None
    assert config.lr == 0.2 and config.secure is SecureMode.MASK and config.clients == 2 and config.rounds == 3
    from federation.run_options import _stored_config  # what secagg audit --empirical reruns: the settings only

    assert ExperimentConfig.from_dict(_stored_config(flower_run)) == CONFIG


def test_the_cli_refuses_a_resume_that_changes_the_settings_or_the_runtime(flower_run, monkeypatch, capsys):
    from federation import cli
    from federation.flower import command

    monkeypatch.setattr(command, "flower_command", lambda args, config: pytest.fail("nothing may start"))
    assert cli.main(["run", "--runtime", "flower", "--resume", "--lr", "0.3", "--out", str(flower_run)]) == 2
    assert "--lr 0.3 differs from the stored run's 0.2" in capsys.readouterr().err
    assert cli.main(["run", "--runtime", "inprocess", "--resume", "--out", str(flower_run)]) == 2
    assert "--runtime inprocess differs from the stored run's flower" in capsys.readouterr().err
    assert cli.main(["run", "--runtime", "flower", "--resume", "--app", "federation.flower.app_template",
                     "--out", str(flower_run)]) == 2
    assert "--app federation.flower.app_template differs from the stored run's (default)" in capsys.readouterr().err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_watch_reports_a_dead_superlink_or_server_app_and_nothing_else(tmp_path):
    import os
    import signal
    import subprocess

    from federation.flower.watch import MARKER, RunWatch

    marker = f"{tmp_path}:test"
    env = {**os.environ, MARKER: marker}
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    superlink = subprocess.Popen(sleeper, env=env)
    earlier = subprocess.Popen([*sleeper, "flwr-serverapp"], env=env)  # an earlier run's ServerApp, exiting
    server_app = None
    try:
        watch = RunWatch(lambda: superlink, marker, tmp_path)
        server_app = subprocess.Popen([*sleeper, "flwr-serverapp"], env=env)
        os.kill(earlier.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while watch.server_app is None:  # found once its environment is readable
            assert watch() is None and time.monotonic() < deadline
        assert watch.server_app == server_app.pid and watch() is None
        os.kill(server_app.pid, signal.SIGKILL)
        server_app.wait()
        assert watch() == f"the ServerApp process {server_app.pid} died before the run ended"
        (tmp_path / "done.json").write_text("{}")  # it ended first: flwr run ends by itself
        assert watch() is None
        superlink.kill()
        superlink.wait()
        assert watch() == "the SuperLink exited (code -9) before the run ended"
    finally:
        for process in (superlink, earlier, server_app):
            if process is not None:
                process.kill()
                process.wait()


def test_the_error_of_a_run_that_stopped_says_how_far_it_got_and_how_to_continue(flower_run, tmp_path):
    from federation.flower.watch import resume_hint

    assert resume_hint(flower_run) == (f"; the checkpoint in {flower_run} holds round 1: the same command with "
                                       "--resume continues the run from there (on new SuperLink and SuperNode "
                                       "processes if need be)")
    assert resume_hint(tmp_path / "nothing") == "; no round was checkpointed yet"


@pytest.mark.parametrize("failed, says", [
    ("RuntimeFailure: the key holder left", "the ServerApp failed: RuntimeFailure: the key holder left; the "
                                            "checkpoint in {out} holds round 1: the same command with --resume"),
    ("CheckpointError: checkpoint belongs to a different configuration (only --rounds may change)",
     "the ServerApp failed: CheckpointError: checkpoint belongs to a different configuration \\(only --rounds "
     "may change\\)$"),  # the resume itself was refused: no hint to resume
    (None, "the Flower run ended without results: the SuperLink exited \\(code -9\\) before the run ended \\(log: "
           ".*\\); the checkpoint in {out} holds round 1"),
])
def test_submit_says_why_a_run_ended_without_results(flower_run, tmp_path, monkeypatch, failed, says):
    import re

    from federation.errors import RuntimeFailure
    from federation.flower import launcher

    def server_app_ends(*args, **kwargs) -> None:  # flwr run, whose ServerApp wrote failed.txt or nothing
        if failed is not None:
            (flower_run / "failed.txt").write_text(failed + "\n")

    monkeypatch.setattr(launcher, "flwr_run", server_app_ends)
    job = FlowerJob(CONFIG, flower_run, resume=True)
    with pytest.raises(RuntimeFailure) as raised:
        launcher.submit(job, launcher.SuperLinkAddress("127.0.0.1:1", insecure=True), tmp_path / "home", 10,
                        watch=lambda: "the SuperLink exited (code -9) before the run ended")
    assert re.match(says.format(out=re.escape(str(flower_run))), str(raised.value)), str(raised.value)
