"""Running the Flower App: on a SuperLink and SuperNodes this module starts on 127.0.0.1, or on an existing
SuperLink (another machine, TLS) through ``flwr run``.

The local deployment is what ``secagg run --runtime flower`` and the tests use: real Flower processes, in
insecure mode (loopback only) with telemetry off and no runtime dependency installation. Each process runs
in its own process group, so :meth:`LocalFlower.kill` takes a SuperNode down with its ClientApp processes,
as a crashed machine would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from federation.errors import RuntimeFailure
from federation.flower.job import KEY_HOLDER_ROLE, FlowerJob

APP_DIR = Path(__file__).parent / "app"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class SuperLinkAddress:
    """Where ``flwr run`` submits: ``host:port`` of the SuperLink, TLS unless ``insecure``."""

    address: str
    insecure: bool = False
    root_certificates: Path | None = None


def client_nodes(clients: int, key_holder: bool) -> list[str]:
    """The ``--node-config`` of each SuperNode a run needs."""
    nodes = [f"partition-id={i}" for i in range(clients)]
    return nodes + ([f'role="{KEY_HOLDER_ROLE}"'] if key_holder else [])


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def submit(job: FlowerJob, link: SuperLinkAddress, home: Path, timeout: float) -> None:
    """``flwr run`` the app with ``job`` on ``link`` and wait for the run to end; ``home`` is FLWR_HOME."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", 'default = "secagg"', "", "[superlink.secagg]", f"address = {_toml_string(link.address)}",
             f"insecure = {'true' if link.insecure else 'false'}"]
    if link.root_certificates is not None:
        lines.append(f"root-certificates = {_toml_string(str(link.root_certificates.resolve()))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    run_config = home / "run-config.toml"
    run_config.write_text("".join(f"{key} = {_toml_string(v) if isinstance(v, str) else v}\n"
                                  for key, v in job.run_config().items()))
    app = home / "app"
    shutil.rmtree(app, ignore_errors=True)
    shutil.copytree(APP_DIR, app)  # flwr builds the bundle in place: never inside the installed package
    for name in ("done.json", "failed.txt"):
        (job.out / name).unlink(missing_ok=True)
    command = [_tool("flwr"), "run", str(app), "secagg", "--run-config", str(run_config), "--stream"]
    log = (home / "flwr-run.log").open("w")
    try:
        subprocess.run(command, env=_env(home), stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeFailure(f"the Flower run did not end within {timeout:.0f} s (log: {home / 'flwr-run.log'})")
    finally:
        log.close()
    if (job.out / "failed.txt").exists():
        raise RuntimeFailure(f"the ServerApp failed: {(job.out / 'failed.txt').read_text().strip()}")
    if not (job.out / "done.json").exists():
        raise RuntimeFailure(f"the Flower run ended without results (log: {home / 'flwr-run.log'})")


class LocalFlower:
    """A SuperLink and one SuperNode per ``--node-config`` entry, as processes on 127.0.0.1."""

    def __init__(self, workdir: Path, nodes: Sequence[str]) -> None:
        self.workdir, self.node_configs = Path(workdir), list(nodes)
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen] = []

    def __enter__(self) -> LocalFlower:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def link(self) -> SuperLinkAddress:
        return SuperLinkAddress(f"{LOOPBACK}:{self.port}", insecure=True)

    def start(self, ready_timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.superlink = self._spawn("superlink", [_tool("flower-superlink"), "--insecure", "--host", LOOPBACK,
                                                   "--port", str(self.port), "--disable-runtime-dependency-installation"])
        _wait_for_port(self.port, ready_timeout, self.superlink)
        for i, node_config in enumerate(self.node_configs):
            self.supernodes.append(self._spawn(f"supernode-{i}", [
                _tool("flower-supernode"), "--insecure", "--superlink", f"{LOOPBACK}:{self.port}",
                "--host", LOOPBACK, "--port", str(free_port()), "--node-config", node_config]))

    def run(self, job: FlowerJob, timeout: float = 1800.0) -> None:
        submit(job, self.link, self.workdir / "flwr-home", timeout)

    def kill(self, index: int) -> None:
        """SIGKILL SuperNode ``index`` and its ClientApp processes (a machine that crashed)."""
        _signal_group(self.supernodes[index], signal.SIGKILL)

    def stop(self) -> None:
        for process in [*self.supernodes, self.superlink]:
            if process is not None and process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in [*self.supernodes, self.superlink]:
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
            _signal_group(process, signal.SIGKILL)  # children the process left behind

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("w")
        try:
            return subprocess.Popen(command, env=_env(self.workdir / "flwr-home"), stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=self.workdir)
        finally:
            log.close()


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise RuntimeFailure(f"{name} not found beside {sys.executable}: install the extra, pip install '.[flower]'")
    return str(path)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def _wait_for_port(port: int, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeFailure(f"the SuperLink exited with code {process.returncode} before it listened")
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeFailure(f"the SuperLink did not listen on port {port} within {timeout:.0f} s")


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
