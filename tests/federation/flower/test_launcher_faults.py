"""``secagg run --runtime flower`` killed from outside leaves no process behind: not the SuperLink, the
SuperNodes, nor what Flower starts under them (SuperExec, ServerApp, ClientApps), whichever signal ends it.

Each test starts the command in a subprocess, waits until every kind of process is up (the ServerApp has sent
the nodes their first message, so ClientApps run), signals the command and checks that every process carrying
its run's marker is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from federation.flower.launcher import MARKER  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _processes_of(out: Path) -> dict[int, str]:
    """pid -> command line of the live processes started for ``--out out``."""
    prefix = f"{MARKER}={out.resolve()}:".encode()
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(e.startswith(prefix) for e in (proc / "environ").read_bytes().split(b"\0")):
                stat = (proc / "stat").read_text()
                if stat[stat.rindex(")") + 2] not in "ZX":
                    found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


def _start(out: Path) -> tuple[subprocess.Popen, dict[int, str]]:
    """The running command and its processes, once the first round is under way (the nodes' long-lived
    ClientApp processes, federation.flower.executor, have their first train message)."""
    command = [sys.executable, "-m", "federation.cli", "run", "--runtime", "flower", "--clients", "2",
               "--rounds", "3", "--local-epochs", "1", "--stage-timeout", "120", "--quiet", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not ((out / "progress.jsonl").exists()
               and " ".join((started := _processes_of(out)).values()).count("federation.flower.executor") == 2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no ClientApp ever ran: {process.communicate()[1].decode()[-2000:]}")
        time.sleep(0.1)
    return process, started


def _gone_within(out: Path, seconds: float) -> dict[int, str]:
    deadline = time.monotonic() + seconds
    while (left := _processes_of(out)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _clean_up(out: Path) -> None:
    for pid in _processes_of(out):  # a failing test leaves nothing behind either
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_run_leaves_no_flower_process_behind(tmp_path, sig):
    out = tmp_path / "out"
    process, started = _start(out)
    try:
        commands = " ".join(started.values())
        assert "flower-superlink" in commands and commands.count("federation.flower.supernode") == 2
        assert "flwr-serverapp" in commands  # Flower's own grandchild, in a session of its own
        process.send_signal(sig)
        process.wait(timeout=30)
        left = _gone_within(out, 5.0)
        assert not left, f"left running after {sig.name}: {left}"
        if sig is not signal.SIGKILL:  # unwound through the launcher's cleanup
            assert process.returncode == {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 130}[sig]
    finally:
        process.kill()
        _clean_up(out)
