"""docs/integration.md: both examples run exactly as printed, and the change stays within 10 lines."""

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "integration.md"


def examples() -> dict[str, str]:
    text = DOC.read_text()
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", text, flags=re.S))


def changed_lines(before: str, after: str) -> int:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return sum(1 for line in diff if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip())


def test_the_change_is_at_most_ten_lines():
    ex = examples()
    assert set(ex) == {"before", "after"}
    n = changed_lines(ex["before"], ex["after"])
    assert n <= 10
    assert f"**{n} lines**" in DOC.read_text()


@pytest.mark.parametrize("name", ["before", "after"])
def test_example_runs_and_learns(tmp_path, name):
    script = tmp_path / f"{name}.py"
    script.write_text(examples()[name])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", proc.stdout).group(1))
    assert accuracy > 0.9
