"""Layering rules from docs/architecture.md, checked on the source."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> set[str]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


@pytest.mark.parametrize("package", ["secagg", "dp"])
def test_lower_layers_never_import_federation(package):
    assert not {m for m in imported_modules(package) if m.split(".")[0] == "federation"}


def test_secagg_has_no_non_cryptographic_randomness():
    bad = {"random", "numpy.random"}
    for path in (ROOT / "secagg").rglob("*.py"):
        text = path.read_text()
        assert "np.random" not in text and "numpy.random" not in text, path
    assert not bad & imported_modules("secagg")


def test_nothing_unpickles_or_torch_loads():
    for package in ("secagg", "dp", "federation"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for forbidden in ("import pickle", "pickle.load", "torch.load(", "allow_pickle=True"):
                assert forbidden not in text, (path, forbidden)
