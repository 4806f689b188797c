"""``secagg bench --audit CxR``: time the audit of a synthetic ledger of C clients x R rounds.

Every client spends a DP-SGD event each round (two kinds, alternating by client), and the population a
client-level Gaussian event: C * R + R entries. Timed: loading the ledger, auditing it under RDP and PRV
(in process), and the whole ``secagg audit LEDGER --json`` command in a fresh interpreter (imports included).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dp.audit import audit
from dp.events import GaussianEvent, PoissonSampledGaussianEvent
from dp.ledger import LEDGER_NAME, POPULATION, PrivacyLedger
from federation.errors import ConfigError


def parse_size(text: str) -> tuple[int, int]:
    try:
        clients, rounds = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--audit takes CLIENTSxROUNDS, e.g. 1000x1000, got {text!r}") from None
    if clients < 1 or rounds < 1:
        raise ConfigError(f"--audit needs at least one client and one round, got {text!r}")
    return clients, rounds


def synthetic_ledger(clients: int, rounds: int) -> PrivacyLedger:
    kinds = [PoissonSampledGaussianEvent(1.0, 0.05, 100), PoissonSampledGaussianEvent(1.2, 0.05, 100)]
    ledger = PrivacyLedger(1e-5)
    for r in range(1, rounds + 1):
        spend: dict = {c: [kinds[c % 2]] for c in range(clients)}
        spend[POPULATION] = [GaussianEvent(1.0)]
        ledger.commit(r, spend, None)
    return ledger


def run_audit_bench(clients: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / LEDGER_NAME
        synthetic_ledger(clients, rounds).save(path)
        start = time.perf_counter()
        ledger = PrivacyLedger.load(path)
        loaded = time.perf_counter()
        audit(ledger)
        audited = time.perf_counter()
        subprocess.run([sys.executable, "-m", "federation.cli", "audit", str(path), "--json"], check=True,
                       stdout=subprocess.DEVNULL)
        command = time.perf_counter() - audited
        return {"clients": clients, "rounds": rounds, "entries": len(ledger.entries),
                "file_bytes": path.stat().st_size, "load_seconds": loaded - start,
                "audit_seconds": audited - loaded, "command_seconds": command}


def audit_markdown(row: dict[str, Any]) -> str:
    return (f"Audit of a synthetic ledger ({row['clients']} clients x {row['rounds']} rounds, {row['entries']:,} "
            f"entries, {row['file_bytes']:,} bytes): load {row['load_seconds']:.2f} s, audit (RDP and PRV) "
            f"{row['audit_seconds']:.2f} s in process; `secagg audit LEDGER --json` in a fresh interpreter "
            f"{row['command_seconds']:.2f} s.\n")
