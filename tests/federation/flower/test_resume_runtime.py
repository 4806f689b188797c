"""``secagg run --runtime flower`` killed from inside, for real: the SuperLink (or only the ServerApp) SIGKILLed
mid-run ends the command at once with exit status 2, a message naming the checkpointed round and ``--resume``,
and no process left behind; ``--resume`` then finishes the run on new SuperLink and SuperNode processes, with
the uninterrupted in-process run's clients, accuracy and parameters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from federation.cli import build_parser, config_from_args  # noqa: E402
from federation.experiment import build_federation  # noqa: E402
from federation.params import get_vector  # noqa: E402
from tests.federation.flower.test_launcher_faults import _clean_up, _gone_within, _processes_of  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

JOB = ["--clients", "2", "--rounds", "3", "--local-epochs", "1", "--secure", "mask", "--seed", "3"]
DP = {"none": [], "dp-sgd": ["--dp", "local", "--noise-multiplier", "1.0"]}  # the DP options of each case


def _secagg(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "federation.cli", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _kill_after_round_1(process: subprocess.Popen, out: Path, program: str) -> tuple[int, float, str]:
    """Once round 1 is checkpointed, SIGKILL the deployment's process running ``program``; the command's exit
    status, the seconds it took to exit after the kill, and what it wrote to stderr."""
    deadline = time.monotonic() + 150
    while not (out / "checkpoint.npz").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"round 1 never ended: {process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    (pid,) = [p for p, command in _processes_of(out).items() if program in command]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    _, err = process.communicate(timeout=60)
    print(f"{program} killed: exit {process.returncode} after {time.monotonic() - killed:.2f} s")  # pytest -s
    return process.returncode, time.monotonic() - killed, err


@pytest.mark.parametrize("dp", list(DP))
def test_a_run_whose_superlink_was_killed_resumes_to_the_uninterrupted_result(tmp_path, dp):
    out = tmp_path / "out"
    options = [*JOB, *DP[dp]]
    process = _secagg("run", "--runtime", "flower", *options, "--stage-timeout", "60", "--quiet", "--out", str(out))
    try:
        code, seconds, err = _kill_after_round_1(process, out, "flower-superlink")
        assert code == 2, err
        assert seconds < 15, f"{seconds:.1f} s to stop after the SuperLink died"
        assert "--resume" in err and "holds round" in err, err
        assert not _gone_within(out, 5.0), "processes left after the SuperLink died"
    finally:
        process.kill()
        _clean_up(out)
    stopped = json.loads((out / "results.json").read_text())
    assert 1 <= len(stopped["rounds"]) < 3

    resumed = _secagg("run", "--resume", "--quiet", "--out", str(out))  # every setting from the stored run
    try:
        _, err = resumed.communicate(timeout=240)
        assert resumed.returncode == 0, err
    finally:
        resumed.kill()
        _clean_up(out)
    doc = json.loads((out / "results.json").read_text())
    with np.load(out / "checkpoint.npz", allow_pickle=False) as ckpt:
        params = ckpt["params"]
    assert doc["run_id"] == stopped["run_id"] and doc["config"]["runtime"] == "flower"
    assert doc["rounds"][:len(stopped["rounds"])] == stopped["rounds"]

    expected = build_federation(config_from_args(build_parser().parse_args(["run", *options])))
    history = expected.run()
    assert [r["status"] for r in doc["rounds"]] == ["ok"] * 3
    assert [r["clients"] for r in doc["rounds"]] == [h.clients for h in history]
    if dp == "none":
        assert [r["accuracy"] for r in doc["rounds"]] == pytest.approx([h.accuracy for h in history], abs=0.01)
        np.testing.assert_allclose(params, get_vector(expected.model), atol=2e-3)  # fixed-point rounding
        return
    # with DP the noise is fresh in every run: the ledger is compared. Each round is charged what the
    # in-process run charges it; the round under way at the kill (written ahead) once more, never less
    from dp.ledger import PrivacyLedger

    ledger, reference = PrivacyLedger.load(out / "ledger.json"), history.ledger
    charges = [r for r, _, _ in ledger.entries]
    once = [r for r, _, _ in reference.entries]
    assert {r: charges.count(r) for r in (1, 3)} == {r: once.count(r) for r in (1, 3)}
    assert charges.count(2) in (once.count(2), 2 * once.count(2))
    for party in reference.parties():
        if charges.count(2) == once.count(2):
            assert ledger.epsilon(party) == pytest.approx(reference.epsilon(party), rel=1e-12)
        else:
            assert ledger.epsilon(party) > reference.epsilon(party)


def test_a_killed_server_app_ends_the_run_at_once(tmp_path):
    out = tmp_path / "out"
    process = _secagg("run", "--runtime", "flower", "--clients", "2", "--rounds", "3", "--local-epochs", "1",
                      "--stage-timeout", "120", "--quiet", "--out", str(out))
    try:
        code, seconds, err = _kill_after_round_1(process, out, "flwr-serverapp")
        assert code == 2, err
        assert seconds < 15, f"{seconds:.1f} s to stop after the ServerApp died"  # Flower itself takes ~40 s
        assert "the ServerApp process" in err and "died" in err and "--resume" in err, err
        assert not _gone_within(out, 5.0), "processes left after the ServerApp died"
    finally:
        process.kill()
        _clean_up(out)
