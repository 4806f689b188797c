"""``secagg`` options before anything runs: a help that loads no torch, options that need a mode, a fresh
run that would replace another run's files, and ``--resume`` with the stored run's settings."""

import json
import subprocess
import sys
import time

import pytest

from federation.cli import build_parser, main
from federation.errors import ConfigError
from federation.run_options import explicit_options, flags, resume_options, stored_options

HEAVY = ("torch", "opacus", "tenseal", "flwr", "matplotlib", "sklearn")
SMALL = ["--dataset", "breast_cancer", "--clients", "3", "--local-epochs", "1", "--quiet"]


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_and_option_errors_load_no_heavy_package(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "ledger.json").write_text("{}")
    code = f"""
import sys
from federation.cli import build_parser, main
build_parser()
for argv in (["--help"], ["run", "--help"], ["bench", "--help"], ["audit", "--help"], ["run", "--clients", "x"]):
    try:
        main(argv)
    except SystemExit as exit:
        assert exit.code == (2 if "x" in argv else 0), (argv, exit.code)
assert main(["run", "--clients", "0", "--out", {str(tmp_path / "a")!r}]) == 2
assert main(["run", "--clip", "2", "--out", {str(tmp_path / "b")!r}]) == 2
assert main(["run", "--out", {str(tmp_path / "taken")!r}]) == 2
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "need at least one client" in proc.stderr and "--clip applies only with --dp" in proc.stderr
    assert "holds another run's ledger.json" in proc.stderr


def test_help_answers_within_a_second():
    times = []
    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "federation.cli", "--help"], capture_output=True, timeout=60)
        times.append(time.perf_counter() - start)
        assert proc.returncode == 0 and b"run" in proc.stdout
    assert min(times) < 1.0, times  # the best of three: the machine may be busy with other work


def test_explicit_options_include_values_equal_to_the_default():
    argv = ["run", "--lr", "0.1", "--consistency-check", "--out", "x", "--noise-mult", "1"]
    assert explicit_options(build_parser(), argv) == {"lr", "consistency_check", "out", "noise_multiplier"}
    assert explicit_options(build_parser(), ["run"]) == set()
    assert flags(build_parser())["noise_multiplier"] == "--noise-multiplier"


@pytest.mark.parametrize("args, message", [
    (["--noise-multiplier", "1"], "--noise-multiplier applies only with --dp"),
    (["--target-epsilon", "3", "--delta", "1e-6"], "--target-epsilon applies only with --dp local|central|distri"),
    (["--secure", "mask", "--clip", "1"], "--clip applies only with --dp"),
    (["--adaptive-clip", "0.5", "--clip-lr", "0.1"], "--clip-lr applies only with --dp"),
    (["--count-noise", "1"], "--count-noise applies only with --dp"),
    (["--max-epsilon", "3"], "--max-epsilon applies only with --dp"),
    (["--secure-mode"], "--secure-mode applies only with --dp"),
    (["--neighbors", "4"], "--neighbors applies only with --secure mask"),
    (["--secure", "ckks", "--threshold", "3"], "--threshold applies only with --secure mask"),
    (["--consistency-check"], "--consistency-check applies only with --secure mask"),
    (["--secure", "ckks", "--precision-bits", "16"], "--precision-bits applies only with --secure mask"),
    (["--encode-clip", "2"], "--encode-clip applies only with --secure mask|ckks"),
])
def test_options_without_their_mode_are_refused(tmp_path, capsys, args, message):
    assert main(["run", *args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_options_with_their_mode_pass_the_check(tmp_path, capsys):
    # refused later, by the settings themselves: the mode check let them through
    assert main(["run", "--secure", "ckks", "--encode-clip", "-1", "--out", str(tmp_path)]) == 2
    assert "applies only" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory):
    """One round of a masked run with non-default settings."""
    out = tmp_path_factory.mktemp("stored")
    assert main(["run", *SMALL, "--rounds", "1", "--lr", "0.2", "--secure", "mask", "--threshold", "2",
                 "--out", str(out)]) == 0
    return out


def test_a_fresh_run_over_another_runs_files_is_refused_before_loading(stored_run, capsys):
    before = (stored_run / "results.json").read_bytes()
    assert main(["run", *SMALL, "--out", str(stored_run)]) == 2
    err = capsys.readouterr().err
    assert "holds another run's results.json" in err and "--overwrite" in err and "--resume" in err
    assert (stored_run / "results.json").read_bytes() == before
    assert main(["run", "--resume", "--overwrite", "--out", str(stored_run)]) == 2
    assert "not both" in capsys.readouterr().err


def test_overwrite_replaces_another_run(tmp_path, stored_run):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(stored_run, out)
    assert main(["run", *SMALL, "--rounds", "1", "--overwrite", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["secure"] == "none" and doc["config"]["lr"] == 0.1


def test_resume_with_no_options_continues_the_stored_run(tmp_path, stored_run):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(stored_run, out)
    assert main(["run", "--quiet", "--out", str(out), "--resume", "--rounds", "2"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [r["round"] for r in doc["rounds"]] == [1, 2]
    assert doc["config"]["lr"] == 0.2 and doc["config"]["secure"] == "mask" and doc["config"]["clients"] == 3
    assert doc["config"]["masking"]["threshold"] == 2 and doc["config"]["rounds"] == 2
    # the same settings given again are accepted (the run is complete: nothing more to do)
    assert main(["run", *SMALL, "--rounds", "2", "--lr", "0.2", "--secure", "mask", "--out", str(out),
                 "--resume"]) == 0


def test_resume_refuses_each_differing_option_by_name(stored_run, capsys):
    assert main(["run", "--out", str(stored_run), "--resume", "--lr", "0.3", "--clients", "5", "--threshold",
                 "2.0", "--rounds", "4"]) == 2
    err = capsys.readouterr().err
    assert "--lr 0.3 differs from the stored run's 0.2" in err
    assert "--clients 5 differs from the stored run's 3" in err
    assert "--threshold 2.0 differs from the stored run's 2" in err  # a fraction is not a count
    assert "--rounds 4" not in err
    assert main(["run", "--out", str(stored_run), "--resume", "--noise-multiplier", "1"]) == 2
    assert "--noise-multiplier applies only with --dp" in capsys.readouterr().err


def test_stored_options_fall_back_to_the_checkpoint(tmp_path, stored_run):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(stored_run, out)
    (out / "results.json").unlink()
    options = stored_options(out)
    assert options["lr"] == 0.2 and options["secure"] == "mask" and "rounds" not in options
    assert stored_options(tmp_path / "empty") is None


def test_resume_options_take_the_stored_values():
    args = build_parser().parse_args(["run", "--rounds", "9"])
    stored = {"lr": 0.2, "rounds": 3, "clients_per_round": 2}
    resume_options(args, {"rounds"}, stored, flags(build_parser()))
    assert (args.lr, args.rounds, args.clients_per_round) == (0.2, 9, 2)
    args = build_parser().parse_args(["run", "--clients-per-round", "2.0"])
    with pytest.raises(ConfigError, match="--clients-per-round 2.0 differs from the stored run's 2"):
        resume_options(args, {"clients_per_round"}, stored, flags(build_parser()))


def test_out_of_memory_outside_a_round_is_a_clear_error_not_a_traceback(monkeypatch, capsys):
    from federation import cli

    def exhausted(args):
        raise MemoryError("Unable to allocate 3.00 GiB for an array")

    monkeypatch.setattr(cli, "bench_command", exhausted)
    assert cli.main(["bench", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("secagg: error: out of memory (Unable to allocate 3.00 GiB") and "available" in err
