"""The Flower runtime for real: a SuperLink and SuperNodes as processes on 127.0.0.1, the same protocols.

Each run of the built-in job is checked against the in-process run with the same seed and data: same clients,
same accuracy, final parameters equal up to the protection mode's own rounding (fixed-point, CKKS noise). The
dropout run uses the app template: the SuperNodes import the user's module, as a user's own job would run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from federation.experiment import ExperimentConfig, SecureMode, build_federation  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from federation.flower.launcher import LocalFlower, client_nodes  # noqa: E402
from federation.params import get_vector  # noqa: E402
from tests.federation.flower.background import BackgroundRun  # noqa: E402

pytestmark = pytest.mark.slow


def _in_process(job: FlowerJob):
    federation = build_federation(job.config)
    history = federation.run()
    return history, get_vector(federation.model)


def _flower_results(out: Path) -> tuple[list[dict], np.ndarray]:
    rounds = json.loads((out / "results.json").read_text())["rounds"]
    with np.load(out / "checkpoint.npz", allow_pickle=False) as ckpt:
        params = ckpt["params"]
    return rounds, params


@pytest.mark.parametrize("mode", ["mask", "ckks"])
def test_flower_run_equals_the_in_process_run(tmp_path, mode):
    config = ExperimentConfig(rounds=2, clients=3, local_epochs=1, secure=SecureMode(mode), seed=3)
    job = FlowerJob(config, tmp_path / "out", stage_timeout=120.0, connect_timeout=120.0)
    with LocalFlower(tmp_path, client_nodes(3, key_holder=mode == "ckks")) as flower:
        flower.run(job, timeout=600)
    rounds, params = _flower_results(job.out)
    history, expected = _in_process(job)
    assert [r["status"] for r in rounds] == ["ok", "ok"]
    assert [r["clients"] for r in rounds] == [h.clients for h in history]
    assert all(r["survivors"] == 3 and not r["dropped"] and not r["rejected"] for r in rounds)
    assert [r["accuracy"] for r in rounds] == pytest.approx([h.accuracy for h in history], abs=0.02)
    np.testing.assert_allclose(params, expected, atol=2e-3)
    assert rounds[0]["bytes_up"] == pytest.approx(history[0].bytes_up, rel=0.01)


def test_a_supernode_killed_mid_round_is_a_dropout_with_the_user_s_app(tmp_path):
    config = ExperimentConfig(rounds=1, clients=4, local_epochs=1, secure=SecureMode.MASK, hidden=8)
    job = FlowerJob(config, tmp_path / "out", app="federation.flower.app_template", stage_timeout=20.0,
                    connect_timeout=120.0)
    with LocalFlower(tmp_path, client_nodes(4, key_holder=False)) as flower:
        run = BackgroundRun(flower, job, timeout=600)
        # the masked-input stage: client 3 holds its neighbours' shares but will never send its input
        run.wait_for_stage(2, within=400)
        flower.kill(3)
        errors = run.join()
    assert not errors, errors
    (record,) = json.loads((job.out / "results.json").read_text())["rounds"]
    assert record["status"] == "ok"
    assert record["dropped"] == [3]
    assert record["survivors"] == 3
    assert record["accuracy"] > 0.4  # the template's test set, on the server: four classes
    settings = json.loads((job.out / "results.json").read_text())
    assert "federation.flower.app_template" in json.dumps(settings)
