import json

import pytest

from federation.bench import report
from federation.bench.runner import BenchCase, BenchMode, run_case
from federation.cli import main
from federation.errors import ConfigError


@pytest.mark.parametrize("mode", list(BenchMode))
def test_a_case_reports_every_documented_key(mode):
    row = run_case(BenchCase(mode, 2000, 8, 0.25), repeat=2)
    for key in ("mode", "params", "clients", "dropout", "client_seconds", "server_seconds", "bytes_up_per_client",
                "expansion", "max_abs_error", "floor_prg_seconds", "floor_float32_sum_seconds", "round_seconds"):
        assert key in row
    assert row["survivors"] == 6
    assert row["client_seconds"]["min"] <= row["client_seconds"]["median"] <= row["client_seconds"]["max"]
    if mode is BenchMode.CKKS:
        assert row["expansion"] > 1.2  # compact ciphertexts: about 7 bytes per parameter
    else:
        assert 1.0 < row["expansion"] < 1.01
    masking = mode in (BenchMode.MASK, BenchMode.MASK_ACTIVE)
    assert row["max_abs_error"] < (1e-5 if masking or mode is BenchMode.CKKS else 1e-6)  # 20-bit precision
    if masking:
        # one self mask per survivor, plus the pairwise masks of each of the 2 dropped clients' live neighbours
        pairwise = row["unmask_prg_expansions"] - 6
        assert 2 * (row["degree"] - 1) <= pairwise <= 2 * row["degree"]
        assert row["masking_ratio"] > 0 and row["key_and_share_bytes_per_client"] > 0


def test_bad_cases_are_refused():
    with pytest.raises(ConfigError):
        BenchCase(BenchMode.NONE, 10, 1, 0.0)
    with pytest.raises(ConfigError):
        BenchCase(BenchMode.NONE, 10, 5, 1.0)


def test_bench_command_writes_json_and_markdown(tmp_path, capsys):
    assert main(["bench", "--modes", "none,mask", "--params", "1e3", "--clients", "4", "--dropout", "0",
                 "--repeat", "1", "--out", str(tmp_path), "--quiet"]) == 0
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert [r["mode"] for r in doc["results"]] == ["none", "mask"]
    assert doc["machine"]["cpus"] >= 1
    assert "| mask | 1000 | 4 |" in (tmp_path / "bench.md").read_text()
    for png in ("time_vs_clients.png", "time_vs_params.png", "bytes_per_param.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    assert all(r["peak_memory_bytes"] > 1000 * 4 for r in doc["results"])


@pytest.mark.parametrize("args", [["--modes", "ckks-nope"], ["--params", "1.5"], ["--clients", "x"]])
def test_bench_bad_options_exit_2(tmp_path, args):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *args, "--out", str(tmp_path), "--quiet"])
    assert exit_info.value.code == 2


def test_bench_impossible_settings_exit_2(tmp_path, capsys):
    assert main(["bench", "--repeat", "0", "--out", str(tmp_path), "--quiet"]) == 2
    assert "repeat must be at least 1" in capsys.readouterr().err
    assert main(["bench", "--clients", "1", "--out", str(tmp_path), "--quiet"]) == 2


def test_markdown_cells_handle_missing_columns():
    text = report.markdown([{"mode": "none", "params": 1, "clients": 2, "dropout": 0.0}], "cmd")
    assert "| none | 1 | 2 | 0.0 | - |" in text


def test_ckks_case_reports_key_holder_and_size():
    row = run_case(BenchCase(BenchMode.CKKS, 5000, 3, 0.0), repeat=1)
    assert row["key_holder_seconds"]["median"] > 0
    assert 5 < row["bytes_per_param"] < 9  # compact ciphertexts of 2048 reals, the last one cut after the last
    assert row["encrypt_params_per_second"] > 0
    assert row["max_abs_error"] < 1e-5  # masking's precision


def test_end_to_end_compares_modes_on_the_default_job(tmp_path):
    assert main(["bench", "--modes", "none,ckks", "--params", "1e3", "--clients", "3", "--dropout", "0",
                 "--repeat", "1", "--end-to-end", "--rounds", "2", "--out", str(tmp_path), "--quiet"]) == 0
    doc = json.loads((tmp_path / "bench.json").read_text())
    e2e = {(r["mode"], r["dp"]): r for r in doc["end_to_end"]}
    assert set(e2e) == {("none", "none"), ("none", "local"), ("ckks", "none"), ("ckks", "local"),
                        ("ckks", "distributed")}
    assert e2e["none", "none"]["ratio_to_plaintext"] == 1.0
    assert abs(e2e["none", "none"]["final_accuracy"] - e2e["ckks", "none"]["final_accuracy"]) <= 0.005
    assert e2e["ckks", "local"]["epsilon"] > 0 and "epsilon" not in e2e["ckks", "none"]
    assert e2e["ckks", "distributed"]["epsilon"] > 0
    assert "End to end" in (tmp_path / "bench.md").read_text()


def test_audit_bench_times_a_synthetic_ledger(tmp_path):
    assert main(["bench", "--audit", "30x4", "--out", str(tmp_path), "--quiet"]) == 0
    row = json.loads((tmp_path / "bench.json").read_text())["audit"]
    assert row["entries"] == 30 * 4 + 4 and row["file_bytes"] > 0
    assert row["load_seconds"] > 0 and row["audit_seconds"] > 0 and row["command_seconds"] > 0
    assert "Audit of a synthetic ledger (30 clients x 4 rounds" in (tmp_path / "bench.md").read_text()
    assert main(["bench", "--audit", "30by4", "--out", str(tmp_path), "--quiet"]) == 2
