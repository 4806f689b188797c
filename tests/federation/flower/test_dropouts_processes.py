"""A real dropout: a SuperNode SIGKILLed mid-round (LocalFlower.kill, as a crashed machine) ends the round as
the in-process run of the same configuration with that client's ``drop_stage`` (test_dropouts.py has every
mode and stage through the in-process grid; test_flower_runtime.py kills a node at masking's stage 2). A
long-lived ClientApp process that dies mid-round is a dropout too: its SuperNode starts a new one, which says it
lost the round's session (or, if it starts too slowly, is silent), and either way the client is dropped."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from federation.experiment import ExperimentConfig, SecureMode  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from federation.flower.launcher import LocalFlower, client_nodes  # noqa: E402
from tests.federation.flower.background import BackgroundRun  # noqa: E402
from tests.federation.flower.dropout_harness import ROUNDING, Case, in_process, outcome  # noqa: E402

pytestmark = pytest.mark.slow


def _executor_of(supernode: int) -> int:
    """The long-lived ClientApp process (federation.flower.executor) the SuperNode process started."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2:].split()[1])
            if parent == supernode and b"federation.flower.executor" in (proc / "cmdline").read_bytes():
                return int(proc.name)
        except OSError:
            continue
    raise AssertionError(f"SuperNode process {supernode} runs no executor")


def test_nodes_killed_at_the_ckks_challenge_end_as_the_in_process_dropouts(tmp_path):
    """Once the server has the encrypted uploads and is about to challenge them, client 3's SuperNode dies (a
    crashed machine) and client 2's long-lived ClientApp process dies (its SuperNode starts a new one, which
    has lost the round's session). Both are dropped before stage 1, their uploads are taken back out of the
    sum, the two others answer the challenge again and the key holder decrypts their sum: the in-process run
    with ``drop_stage = {2: 1, 3: 1}``."""
    config = ExperimentConfig(clients=4, rounds=1, local_epochs=1, hidden=16, secure=SecureMode.CKKS, seed=5,
                              min_clients=2)
    job = FlowerJob(config, tmp_path / "out", stage_timeout=20.0, connect_timeout=120.0)  # silence: waited out
    with LocalFlower(tmp_path, client_nodes(4, key_holder=True)) as flower:
        run = BackgroundRun(flower, job, timeout=300)
        # the server writes the stage before it sends the challenges: the nodes die before they can answer
        run.wait_for_stage(1, within=240)
        os.kill(_executor_of(flower.supernodes[2].pid), signal.SIGKILL)
        flower.kill(3)
        errors = run.join()
        left = flower.processes
    assert not errors, errors
    assert not left(), "processes of the deployment outlived it"
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    with np.load(job.out / "checkpoint.npz", allow_pickle=False) as ckpt:
        params = ckpt["params"]
    expected, expected_params = in_process(Case(config, {1: {2: 1, 3: 1}}))
    assert [outcome(r) for r in rounds] == [outcome(r) for r in expected]
    assert rounds[0]["status"] == "ok" and rounds[0]["survivors"] == 2 and rounds[0]["dropped"] == [2, 3]
    assert {c["reason"] for c in rounds[0]["per_client"][2:]} == {"dropped before stage 1"}
    np.testing.assert_allclose(params, expected_params, rtol=0, atol=ROUNDING[SecureMode.CKKS])
