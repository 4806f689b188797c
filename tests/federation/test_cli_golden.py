"""``secagg run`` gives the results it gave before the public API for the same options and seed.

The fixture (golden_cli_results.json) records, per configuration, what is deterministic in a run: its
provenance is written inside it. Runs go through ``federation.cli.main`` in this process.
"""

import json
from pathlib import Path

import pytest

from federation.cli import main

GOLDEN = json.loads((Path(__file__).parent / "golden_cli_results.json").read_text())
EXACT = ("round", "status", "clients", "dropped", "rejected", "survivors", "bytes_down", "abort_reason")
NO_DP = ("none", "mask", "mask_cc", "ckks")
CHECKED = ("none", "mask_cc", "ckks", "central", "dist_mask")  # the other three: same code paths, more time


def _same(got, want):
    """Equal, floats to 1e-9 relative (the privacy accounting is deterministic arithmetic); a key added since
    the golden was made (e.g. a privacy event's ``unit`` and ``relation``) is allowed, a changed one is not."""
    a, b = got, want
    if isinstance(a, dict) and isinstance(b, dict):
        return b.keys() <= a.keys() and all(_same(a[k], b[k]) for k in b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == pytest.approx(b, rel=1e-9)
    return a == b


@pytest.mark.parametrize("name", CHECKED)
def test_run_results_unchanged_for_the_same_options_and_seed(tmp_path, name):
    golden = GOLDEN["runs"][name]
    assert main(["run", "--quiet", *GOLDEN["common_options"], *golden["options"], "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert len(doc["rounds"]) == len(golden["rounds"])
    for want, got in zip(golden["rounds"], doc["rounds"]):
        for key in EXACT:
            assert got[key] == want[key], (name, want["round"], key)
        assert _same(got["privacy_events"], want["privacy_events"]), (name, want["round"])
        assert got["bytes_up"] == pytest.approx(want["bytes_up"], rel=0.01)
        if name in NO_DP:
            assert got["accuracy"] == pytest.approx(want["accuracy"], abs=0.01)
            assert got["loss"] == pytest.approx(want["loss"], abs=1e-4)
    assert _same(doc.get("privacy"), golden["privacy"])
