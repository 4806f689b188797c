"""docs/integration.md: every example runs exactly as printed and learns, every "after" changes at most ten lines
of the one "before" (the count the doc states), and every DP example's audited epsilon is within its target.

Each example runs once, in a subprocess in its own directory, and the audit commands the doc prints run there
after it. ``OMP_NUM_THREADS=1`` keeps torch from spinning threads against other processes on a small machine.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "integration.md"
AFTER = ("plaintext", "masking", "ckks", "dpsgd", "distributed")
# Thresholds the examples beat run after run (DP-SGD's noise is drawn from os.urandom: its accuracy varies);
# chance is 0.1. Client-level DP among 20 clients is the weakest by far (see the doc).
MIN_ACCURACY = {"before": 0.85, "plaintext": 0.85, "masking": 0.85, "ckks": 0.85, "dpsgd": 0.2, "distributed": 0.15}


def examples() -> dict[str, str]:
    text = DOC.read_text()
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", text, flags=re.S))


def commands() -> dict[str, list[str]]:
    """The shell commands printed after an example (``<!-- command: NAME -->`` then a console block)."""
    text = DOC.read_text()
    found = re.findall(r"<!-- command: (\w+) -->\n```console\n(.*?)```", text, flags=re.S)
    return {name: [line[2:] for line in block.splitlines() if line.startswith("$ ")] for name, block in found}


def changed_lines(before: str, after: str) -> int:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return sum(1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip())


def section_of(name: str) -> str:
    """The doc's text from the heading above example ``name`` to the example itself."""
    text = DOC.read_text()
    head = text[: text.index(f"<!-- example: {name} -->")]
    return head[head.rindex("\n## "):]


def test_every_mode_has_an_example_and_dp_examples_an_audit():
    assert set(examples()) == {"before", *AFTER}
    assert set(commands()) == {"dpsgd", "distributed"}


@pytest.mark.parametrize("name", AFTER)
def test_each_after_changes_at_most_ten_lines_and_says_how_many(name):
    ex = examples()
    n = changed_lines(ex["before"], ex[name])
    assert n <= 10
    assert f"**{n} lines**" in section_of(name)


def run_example(directory: Path, name: str) -> tuple[float, float | None]:
    """Run example ``name`` and its commands in ``directory``; its final test accuracy and audited epsilon."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    script = directory / f"{name}.py"
    script.write_text(examples()[name])
    proc = subprocess.run([sys.executable, str(script)], cwd=directory, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = float(re.findall(r"test accuracy ([0-9.]+)", proc.stdout)[-1])
    epsilon = None
    for command in commands().get(name, []):
        argv = shlex.split(command)
        assert argv[0] == "secagg"
        argv[0] = str(Path(sys.executable).with_name("secagg"))
        audit = subprocess.run(argv, cwd=directory, env=env, capture_output=True, text=True, timeout=120)
        assert audit.returncode == 0, audit.stderr[-3000:]
        epsilon = float(re.search(r"^\s*population\b.*?\s(\d+\.\d+)\s", audit.stdout, flags=re.M).group(1))
    return accuracy, epsilon


@pytest.mark.parametrize("name", ["before", *AFTER])
def test_example_runs_learns_and_keeps_its_privacy_target(tmp_path, name):
    accuracy, epsilon = run_example(tmp_path, name)
    assert accuracy > MIN_ACCURACY[name]
    target = re.search(r"target_epsilon=([0-9.]+)", examples()[name])
    if target is not None:
        assert epsilon is not None and 0 < epsilon <= float(target.group(1))
    else:
        assert epsilon is None and "dp=" not in examples()[name]
