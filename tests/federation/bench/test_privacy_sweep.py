"""secagg bench --privacy: accuracy against epsilon, more noise costing less epsilon."""

import json

from federation.bench import report
from federation.bench.privacy_sweep import run_privacy_sweep
from federation.modes import DPMode


def test_the_sweep_reports_accuracy_and_epsilon_and_plots_them(tmp_path):
    rows = run_privacy_sweep((1.0, 4.0), rounds=1, modes=(DPMode.CENTRAL,))
    assert [r["dp"] for r in rows] == ["none", "central", "central"]
    assert rows[0]["epsilon"] is None and rows[1]["epsilon"] > rows[2]["epsilon"] > 0
    assert all(0 <= r["final_accuracy"] <= 1 for r in rows)
    report.write(tmp_path, [], "secagg bench --privacy 1,4", privacy=rows)
    assert (tmp_path / "privacy_utility.png").stat().st_size > 0
    assert json.loads((tmp_path / "bench.json").read_text())["privacy"][1]["unit"] == "client"
    assert "| central | 4.0 |" in (tmp_path / "bench.md").read_text()
