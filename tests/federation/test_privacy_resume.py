"""Spent budget survives a SIGKILL: resuming with the ledger removed, truncated or stale is refused, and an
intact ledger continues without forgetting a round."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dp.accounting.rdp import RDPAccountant
from dp.events import GaussianEvent
from dp.ledger import LEDGER_NAME, POPULATION, PrivacyLedger
from federation import checkpoint
from federation.cli import main

JOB = ["run", "--clients", "3", "--local-epochs", "1", "--partition", "iid", "--dp", "central",
       "--noise-multiplier", "2.0", "--rounds", "6", "--quiet", "--seed", "4"]


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> tuple[Path, Path]:
    """A run SIGKILLed after its second round, and a copy of its ledger as it was after the first."""
    out = tmp_path_factory.mktemp("killed") / "run"
    stale = out.parent / "stale-ledger.json"
    proc = subprocess.Popen([sys.executable, "-m", "federation.cli", *JOB, "--out", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / checkpoint.CHECKPOINT_NAME).exists():
            done = checkpoint.load(out).round
            if done == 1 and not stale.exists():
                shutil.copy(out / LEDGER_NAME, stale)
            if done >= 2:
                break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert stale.exists() and 2 <= checkpoint.load(out).round < 6
    return out, stale


def broken(killed: tuple[Path, Path], tmp_path: Path, how: str) -> Path:
    out, stale = killed
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    ledger = copy / LEDGER_NAME
    if how == "removed":
        ledger.unlink()
    elif how == "truncated":
        ledger.write_bytes(ledger.read_bytes()[: len(ledger.read_bytes()) // 2])
    elif how == "stale":
        shutil.copy(stale, ledger)
    return copy


@pytest.mark.parametrize("how, message", [("removed", "no ledger"), ("truncated", "unreadable ledger"),
                                          ("stale", "does not match the checkpoint")])
def test_resume_refuses_a_ledger_that_lost_budget(killed, tmp_path, capsys, how, message):
    run = broken(killed, tmp_path, how)
    before = (run / checkpoint.CHECKPOINT_NAME).read_bytes()
    assert main([*JOB, "--out", str(run), "--resume"]) == 2
    assert message in capsys.readouterr().err
    assert (run / checkpoint.CHECKPOINT_NAME).read_bytes() == before  # nothing trained, nothing replaced


def test_resume_with_the_intact_ledger_counts_every_round(killed, tmp_path):
    run = broken(killed, tmp_path, "intact")
    assert main([*JOB, "--out", str(run), "--resume"]) == 0
    ledger = PrivacyLedger.load(run / LEDGER_NAME)
    released = sum(r["status"] == "ok" for r in json.loads((run / "results.json").read_text())["rounds"])
    charged = len({r for r, party, _ in ledger.entries if party == POPULATION})
    assert charged >= released == 6  # a round charged before the kill and rerun is charged twice, never zero
    reference = RDPAccountant()
    for _ in range(charged):
        reference.compose(GaussianEvent(2.0))
    assert ledger.epsilon(POPULATION) >= reference.epsilon(1e-5) - 1e-9


def test_resume_refuses_dp_switched_on_over_rounds_run_without_it(tmp_path):
    from federation import DPSGD, CheckpointError
    from tests.federation.test_api import federation

    federation(rounds=2, clients=2, checkpoint_dir=tmp_path).run()
    with pytest.raises(CheckpointError, match="different configuration"):
        federation(rounds=3, clients=2, checkpoint_dir=tmp_path, dp=DPSGD(noise_multiplier=5.0)).run(resume=True)


def test_resume_refuses_another_runs_ledger_with_the_same_entry_counts(tmp_path):
    from federation import CentralDP, CheckpointError
    from tests.federation.test_api import federation

    a, b = tmp_path / "a", tmp_path / "b"
    federation(rounds=2, clients=2, checkpoint_dir=a, dp=CentralDP(noise_multiplier=20.0)).run()
    federation(rounds=2, clients=2, checkpoint_dir=b, dp=CentralDP(noise_multiplier=0.8)).run()
    shutil.copy(a / LEDGER_NAME, b / LEDGER_NAME)
    with pytest.raises(CheckpointError, match="differ in what was charged"):
        federation(rounds=3, clients=2, checkpoint_dir=b, dp=CentralDP(noise_multiplier=0.8)).run(resume=True)


def test_extending_a_target_epsilon_run_is_refused_with_the_way_out(tmp_path):
    from federation import CentralDP, CheckpointError
    from tests.federation.test_api import federation

    federation(rounds=2, clients=2, checkpoint_dir=tmp_path, dp=CentralDP(target_epsilon=2.0)).run()
    with pytest.raises(CheckpointError, match="cannot be re-noised"):
        federation(rounds=4, clients=2, checkpoint_dir=tmp_path, dp=CentralDP(target_epsilon=2.0)).run(resume=True)
