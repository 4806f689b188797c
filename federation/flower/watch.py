"""Watching a local Flower deployment's processes: which ones carry its marker, and what ends a run early.

Every process of one :class:`~federation.flower.launcher.LocalFlower` carries ``MARKER=<workdir>:<random id>``
in its environment, which Flower's own children (SuperExec, ServerApp, ClientApps) inherit. :class:`RunWatch`
ends the wait for ``flwr run`` as soon as the SuperLink or the ServerApp process is gone, and
:func:`resume_hint` says what the checkpoint holds, so the error tells how to continue with ``--resume``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

MARKER = "SECAGG_FLOWER_LOCAL"  # in the environment of every process of one LocalFlower: "<workdir>:<random id>"


def resume_hint(out: Path) -> str:
    """What a run that stopped early left in ``out``, and how to continue it (appended to the error)."""
    from federation import checkpoint
    from federation.errors import CheckpointError

    try:
        done = checkpoint.load(out).round
    except CheckpointError:
        return "; no round was checkpointed yet"
    return (f"; the checkpoint in {out} holds round {done}: the same command with --resume continues the run "
            "from there (on new SuperLink and SuperNode processes if need be)")


class RunWatch:
    """What ends a local run early, as :func:`~federation.flower.launcher.flwr_run`'s ``watch``: the SuperLink
    process exited, or the ServerApp process (Flower's ``flwr-serverapp``, found by the deployment's marker) is
    gone without having written ``done.json`` or ``failed.txt``. ``flwr run --stream`` itself ends within a
    second when the SuperLink dies, but waits for the SuperLink to miss the ServerApp's heartbeats (Flower 1.42:
    40-60 s) when only the ServerApp dies."""

    def __init__(self, superlink: Callable[[], subprocess.Popen | None], marker: str, out: Path) -> None:
        self.superlink, self.marker, self.out = superlink, marker, out
        self.server_app: int | None = None
        self.earlier = set(self._server_apps())  # an earlier run's, still exiting: not this run's

    def __call__(self) -> str | None:
        superlink = self.superlink()
        if superlink is not None and superlink.poll() is not None:
            return f"the SuperLink exited (code {superlink.returncode}) before the run ended"
        if self.server_app is None:  # not seen yet: one sweep of /proc
            self.server_app = next((p for p in self._server_apps() if p not in self.earlier), None)
            return None
        if _marked(Path(f"/proc/{self.server_app}"), self.marker) or any(
                (self.out / name).exists() for name in ("done.json", "failed.txt")):
            return None
        return f"the ServerApp process {self.server_app} died before the run ended"

    def _server_apps(self) -> list[int]:
        return [p for p in marked_processes(self.marker) if b"flwr-serverapp" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def marked_processes(marker: str) -> list[int]:
    """The ids of the live processes (of this user) whose environment holds ``MARKER=marker``."""
    return [int(proc.name) for proc in Path("/proc").glob("[0-9]*") if _marked(proc, marker)]


def _marked(proc: Path, marker: str) -> bool:
    """Whether ``proc`` (``/proc/PID``) is a live process whose environment holds ``MARKER=marker``."""
    try:
        return f"{MARKER}={marker}".encode() in (proc / "environ").read_bytes().split(b"\0") and _alive(proc)
    except OSError:  # gone meanwhile, or another user's
        return False


def _alive(proc: Path) -> bool:
    """False for a zombie: dead, only not yet reaped by its parent."""
    stat = (proc / "stat").read_text()
    return stat[stat.rindex(")") + 2] not in "ZX"
