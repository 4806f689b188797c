"""secagg bench --memory: one round per mode with the server in its own process; --threads: the thread sweep."""

import json

import pytest

from federation.bench.memory import MemoryCase, memory_markdown, run_memory_case
from federation.bench.modes import BenchMode
from federation.cli import main


@pytest.mark.parametrize("mode", [BenchMode.NONE, BenchMode.MASK, BenchMode.CKKS])
def test_memory_case_releases_the_true_mean_and_measures_the_server(mode):
    row = run_memory_case(MemoryCase(mode, 3000, 3))
    assert row["contributors"] == 3
    assert row["max_abs_error"] < 1e-5
    assert 0 < row["server_peak_bytes"] < 2**30 and row["server_seconds"] > 0
    assert "| " + mode.value + " | 3e+03 | 3 |" in memory_markdown([row])


def test_memory_and_threads_commands_write_their_tables(tmp_path):
    assert main(["bench", "--memory", "--modes", "none", "--params", "100", "--clients", "2,3", "--quiet",
                 "--out", str(tmp_path / "m")]) == 0
    doc = json.loads((tmp_path / "m" / "bench.json").read_text())
    assert [r["clients"] for r in doc["memory"]] == [2, 3] and (tmp_path / "m" / "memory.png").exists()


def test_thread_sweep_times_each_count_on_both_sides_of_the_threshold(monkeypatch):
    from federation.bench import threads

    calls = []
    monkeypatch.setattr(threads, "_timed", lambda config, t: calls.append((config.hidden, t)) or (0.1 * t, 10, 0.9))
    rows = threads.run_thread_bench([1, 2], rounds=1, sittings=2)
    assert calls == [(64, 1), (64, 2), (64, 1), (64, 2), (16384, 1), (16384, 2), (16384, 1), (16384, 2)]
    assert [r["x_fastest"] for r in rows] == [1.0, 2.0, 1.0, 2.0]


def test_the_mmap_threshold_is_pinned_where_glibc_allows_it():
    import multiprocessing as mp

    from federation.allocator import pin_mmap_threshold

    process = mp.get_context("fork").Process(target=lambda: exit(0 if pin_mmap_threshold() else 3))
    process.start()
    process.join()
    assert process.exitcode == 0  # glibc here: mallopt accepted the setting (in a child: this process is untouched)
