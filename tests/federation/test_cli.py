"""The ``secagg run`` command, run as a user would: in a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from federation import checkpoint

SMALL = ["--clients", "4", "--rounds", "3", "--local-epochs", "1", "--quiet"]


def secagg(*args, check=True, **kwargs):
    proc = subprocess.run([sys.executable, "-m", "federation.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=300, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_run_writes_results_and_plot(tmp_path):
    secagg("run", *SMALL, "--out", tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["config"]["clients"] == 4 and doc["config"]["secure"] == "none"
    assert len(doc["rounds"]) == 3
    row = doc["rounds"][0]
    for key in ("round", "accuracy", "loss", "clients", "dropped", "bytes_up", "bytes_down", "client_seconds",
                "server_seconds"):
        assert key in row
    assert row["bytes_up"] > 4 * 4000  # the float32 update of a 64-64-10 MLP (4810 parameters) and more
    assert set(doc["final"]) >= {"accuracy", "loss"}
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_masked_run_with_dropout(tmp_path):
    secagg("run", "--secure", "mask", "--clients", "6", "--rounds", "2", "--local-epochs", "1", "--dropout", "0.34",
           "--quiet", "--out", tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["config"]["secure"] == "mask" and doc["config"]["masking"]["neighbors"] is None
    for row in doc["rounds"]:
        assert row["status"] == "ok" and len(row["dropped"]) == 2 and row["survivors"] >= 4


def test_ckks_run(tmp_path):
    secagg("run", "--secure", "ckks", "--clients", "4", "--rounds", "2", "--local-epochs", "1", "--quiet",
           "--out", tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["config"]["secure"] == "ckks"
    assert all(row["status"] == "ok" and row["survivors"] == 4 for row in doc["rounds"])
    assert doc["rounds"][0]["bytes_up"] > 28_000  # ciphertexts (about 7 B/param), not 4,810 float32s (19,292 B)


def test_progress_and_summary_table(tmp_path):
    proc = secagg("run", "--clients", "3", "--rounds", "2", "--local-epochs", "1", "--out", tmp_path)
    assert "round" in proc.stdout and "final accuracy" in proc.stdout
    assert "rounds:" in proc.stderr  # the progress bar


@pytest.mark.parametrize("args, message", [
    (["--rounds", "0"], "rounds must be at least 1"),
    (["--dropout", "1.5"], "dropout must be in"),
    (["--clients", "3", "--clients-per-round", "7"], "only 3 clients"),
    (["--dataset", "mnist"], "invalid choice"),
    (["--secure", "magic"], "invalid choice"),
    (["--clients-per-round", "x"], "count or a fraction"),
    (["--lr", "-1"], "learning rate must be positive"),
    (["--clients", "2000"], "cannot give"),
    (["--secure", "mask", "--threshold", "0"], "threshold must be at least 1"),
    (["--secure", "mask", "--neighbors", "-2"], "neighbors must be non-negative"),
    (["--secure", "mask", "--threshold", "0.3"], "threshold fraction must be in [0.5, 1]"),
    (["--secure", "mask", "--neighbors", "0", "--threshold", "2"], "at or below half of the 9 neighbours"),
    (["--secure", "mask", "--encode-clip", "0"], "clip must be finite and positive"),
    (["--dp", "central"], "give exactly one of --noise-multiplier and --target-epsilon"),
    (["--dp", "central", "--noise-multiplier", "1", "--clip", "0"], "clip must be positive"),
    (["--secure", "mask", "--precision-bits", "60"], "precision_bits"),
])
def test_bad_options_exit_non_zero_without_traceback(tmp_path, args, message):
    proc = secagg("run", *args, "--quiet", "--out", tmp_path, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    job = ["--dataset", "synthetic", "--clients", "6", "--local-epochs", "3", "--quiet", "--seed", "11"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    secagg("run", *job, "--rounds", "6", "--out", straight)

    proc = subprocess.Popen([sys.executable, "-m", "federation.cli", "run", *job, "--rounds", "6", "--out", killed],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / checkpoint.CHECKPOINT_NAME).exists() and checkpoint.load(killed).round >= 2:
            break
        time.sleep(0.01)
    time.sleep(0.05)  # into the next round
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert checkpoint.load(killed).round < 6

    secagg("run", *job, "--rounds", "6", "--out", killed, "--resume")
    a, b = checkpoint.load(straight), checkpoint.load(killed)
    np.testing.assert_array_equal(a.params, b.params)
    acc = [json.loads((d / "results.json").read_text())["final"]["accuracy"] for d in (straight, killed)]
    assert acc[0] == acc[1]


def test_resume_3_to_6_from_the_command_line(tmp_path):
    straight, resumed = tmp_path / "a", tmp_path / "b"
    secagg("run", *SMALL[:2], "--rounds", "6", "--local-epochs", "1", "--quiet", "--out", straight)
    secagg("run", *SMALL[:2], "--rounds", "3", "--local-epochs", "1", "--quiet", "--out", resumed)
    secagg("run", *SMALL[:2], "--rounds", "6", "--local-epochs", "1", "--quiet", "--out", resumed, "--resume")
    np.testing.assert_array_equal(checkpoint.load(straight).params, checkpoint.load(resumed).params)
    rounds = json.loads((resumed / "results.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5, 6]


def test_resume_with_changed_settings_is_a_clear_error(tmp_path):
    secagg("run", *SMALL, "--out", tmp_path)
    proc = secagg("run", *SMALL, "--lr", "0.3", "--out", tmp_path, "--resume", check=False)
    assert proc.returncode == 2 and "--lr 0.3 differs from the stored run's 0.1" in proc.stderr


@pytest.mark.slow
def test_default_job_reaches_target_accuracy(tmp_path):
    """The acceptance target: digits, 10 Dirichlet(0.5) clients, at least 0.93 within 20 rounds."""
    secagg("run", "--quiet", "--out", tmp_path)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["config"]["clients"] == 10 and doc["config"]["partition"] == "dirichlet"
    assert doc["config"]["alpha"] == 0.5 and doc["config"]["rounds"] == 20
    assert max(r["accuracy"] for r in doc["rounds"]) >= 0.93
    assert doc["final"]["accuracy"] >= 0.93


def test_flower_job_carries_the_parsed_configuration_and_the_app(tmp_path):
    pytest.importorskip("flwr")
    from flwr.app import Context, RecordDict

    from federation.cli import build_parser, config_from_args
    from federation.flower.job import FlowerJob

    args = build_parser().parse_args(["run", "--runtime", "flower", "--secure", "mask", "--stage-timeout=30",
                                      "--superlink", "h:1", "--rounds", "2", "--app", "mypackage.fedjob"])
    job = FlowerJob(config_from_args(args), tmp_path, app=args.app, stage_timeout=args.stage_timeout)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=job.run_config())
    assert FlowerJob.from_context(context) == job
    assert job.config.rounds == 2 and job.config.secure.value == "mask" and job.stage_timeout == 30


def test_flower_run_refuses_a_missing_ca_file(tmp_path, capsys):
    pytest.importorskip("flwr")
    from federation.cli import main

    assert main(["run", "--runtime", "flower", "--superlink", "127.0.0.1:1", "--root-certificates",
                 str(tmp_path / "absent.pem"), "--out", str(tmp_path), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
