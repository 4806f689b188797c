"""``secagg bench --flower``'s arithmetic, without processes: round times from round starts, the ratios against
the minimal Flower app, and the refusals."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr")

from federation.bench.flower import (MINIMAL, FlowerBenchRow, _decryptions, _steady, bench_flower,  # noqa: E402
                                     markdown)
from federation.errors import ConfigError  # noqa: E402


def test_round_times_leave_out_the_first_round():
    assert _steady([0.0, 5.0, 7.0, 10.0]) == [2.0, 3.0]


def test_ratios_are_against_the_minimal_round_and_its_cost_for_as_many_exchanges():
    rows = [FlowerBenchRow(MINIMAL, "flower", 10.0, 1.0, 0.9, [10.0]),
            FlowerBenchRow("mask", "long-lived", 8.0, 4.0, 0.9, [8.0])]
    line = next(line for line in markdown(rows, "cmd").splitlines() if line.startswith("| mask"))
    assert line.split(" | ")[4:7] == ["2.00", "0.80", "0.20"]  # s per exchange, x round, x 4 exchanges


def test_the_key_holder_s_decryptions_count_in_the_measured_rounds_only(tmp_path):
    log = tmp_path / "supernode-3.log"
    log.write_text("".join(f"1.0 INFO executor: query.decrypt of run 9 (group {r}) answered in 0.01 s\n"
                           for r in (1, 2, 3, 4)) + "1.0 INFO executor: query.stage of run 9 (group 2) answered\n")
    assert _decryptions(log, range(2, 4)) == 2


@pytest.mark.parametrize("size", ["3", "ax2", "1x2", "3x0"])
def test_a_bad_size_is_refused_before_anything_starts(tmp_path, size):
    with pytest.raises(ConfigError, match="--flower"):
        bench_flower(size, tmp_path, "cmd")
    assert not any(tmp_path.iterdir())
