"""A real dropout: a SuperNode SIGKILLed mid-round (LocalFlower.kill, as a crashed machine) ends the round as
the in-process run of the same configuration with that client's ``drop_stage`` (test_dropouts.py has every
mode and stage through the in-process grid; test_flower_runtime.py kills a node at masking's stage 2)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("flwr")

from federation.experiment import ExperimentConfig, SecureMode  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from federation.flower.launcher import LocalFlower, client_nodes  # noqa: E402
from tests.federation.flower.test_dropouts import ROUNDING, Case, in_process, outcome  # noqa: E402

pytestmark = pytest.mark.slow


def test_a_client_node_killed_at_the_ckks_challenge_ends_as_the_in_process_dropout(tmp_path):
    """Client 2's SuperNode dies once the server has its encrypted upload and is about to challenge it: it is
    dropped before stage 1, its upload is taken back out of the sum, the two others answer the challenge again
    and the key holder decrypts their sum."""
    config = ExperimentConfig(clients=3, rounds=1, local_epochs=1, hidden=16, secure=SecureMode.CKKS, seed=5,
                              min_clients=2)
    job = FlowerJob(config, tmp_path / "out", stage_timeout=12.0, connect_timeout=120.0)  # the silence is waited out
    errors: list[BaseException] = []
    with LocalFlower(tmp_path, client_nodes(3, key_holder=True)) as flower:
        def run() -> None:
            try:
                flower.run(job, timeout=300)
            except BaseException as err:  # noqa: BLE001 - reported by the main thread
                errors.append(err)

        runner = threading.Thread(target=run)
        runner.start()
        progress, deadline = job.out / "progress.jsonl", time.monotonic() + 240
        # the server writes the stage before it sends the challenges: the node is killed before it can answer
        while not (progress.exists() and '"stage": 1' in progress.read_text()):
            assert time.monotonic() < deadline and runner.is_alive(), "the run never reached the challenge"
            time.sleep(0.005)
        flower.kill(2)
        runner.join()
        left = flower.processes
    assert not errors, errors
    assert not left(), "processes of the deployment outlived it"
    rounds = json.loads((job.out / "results.json").read_text())["rounds"]
    with np.load(job.out / "checkpoint.npz", allow_pickle=False) as ckpt:
        params = ckpt["params"]
    expected, expected_params = in_process(Case(config, {1: {2: 1}}))
    assert [outcome(r) for r in rounds] == [outcome(r) for r in expected]
    assert rounds[0]["status"] == "ok" and rounds[0]["survivors"] == 2
    assert rounds[0]["per_client"][2]["reason"] == "dropped before stage 1"
    np.testing.assert_allclose(params, expected_params, rtol=0, atol=ROUNDING[SecureMode.CKKS])
