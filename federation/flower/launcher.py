"""Running the Flower App: on a SuperLink and SuperNodes this module starts on 127.0.0.1, or on an existing
SuperLink (another machine, TLS) through ``flwr run``.

The local deployment is what ``secagg run --runtime flower`` and the tests use: real Flower processes, in
insecure mode (loopback only) with telemetry off and no runtime dependency installation. Each process runs
in its own process group, so :meth:`LocalFlower.kill` takes a SuperNode down with its ClientApp processes,
as a crashed machine would.

No process outlives the run. Every process of a deployment carries a marker in its environment, which Flower's
own children inherit (the SuperLink starts its SuperExec, and that the ServerApp, in a session of their own, out
of reach of a process-group kill). SIGTERM and SIGHUP unwind like Ctrl-C, and :meth:`LocalFlower.stop` ends
every marked process. Where this process is SIGKILLed and runs no code, the processes it started die with it
(Linux's parent-death signal), and a reaper it started, which holds the read end of a pipe from it, wakes at
end of file and SIGKILLs every marked process left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Callable, Sequence

from federation.errors import RuntimeFailure
from federation.flower.job import KEY_HOLDER_ROLE, FlowerJob
from federation.flower.watch import MARKER, RunWatch, marked_processes, resume_hint

APP_DIR = Path(__file__).parent / "app"
LOOPBACK = "127.0.0.1"
PR_SET_PDEATHSIG = 1
# Every node of a local deployment shares this machine's cores: one compute thread each (torch's default is one
# per core, so three clients training at once would oversubscribe them).
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# The reaper (python -c REAPER marker): waits for end of file on stdin, then SIGKILLs every process whose
# environment holds the marker until none is left (three empty sweeps in a row; at most 10 s).
REAPER = f"""
import os, signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
sys.stdin.buffer.read()
entry, empty, deadline = ("{MARKER}=" + sys.argv[1]).encode(), 0, time.monotonic() + 10
while empty < 3 and time.monotonic() < deadline:
    empty += 1
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if entry in (proc / "environ").read_bytes().split(bytes(1)):
                os.kill(int(proc.name), signal.SIGKILL)
                empty = 0
        except OSError:
            pass
    time.sleep(0.1)
"""


class NodeKind(Enum):
    """The SuperNodes of a local deployment. ``long-lived``: :mod:`federation.flower.supernode` with one
    ClientApp process serving every message, short polls; ``per-message``: the same with Flower's process per
    message; ``flower``: Flower's own ``flower-supernode`` (process per message, Flower's polling intervals)."""

    LONG_LIVED = "long-lived"
    PER_MESSAGE = "per-message"
    FLOWER = "flower"


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
    """A port to listen on, free now and below the kernel's ephemeral range: a port the kernel hands out
    (``bind`` to 0) can be taken by any outgoing connection before the process we give it to listens on it,
    and SuperNodes polling their SuperLink make outgoing connections all the time."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)  # not a secret: only a port to try
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # a crowded range: take the kernel's choice
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_value(value: str | float | int | bool) -> str:
    if isinstance(value, bool):  # before int: True is an int, and TOML spells it true
        return "true" if value else "false"
    return _toml_string(value) if isinstance(value, str) else str(value)


def submit(job: FlowerJob, link: SuperLinkAddress, home: Path, timeout: float, enter: Sequence[str] = (),
           watch: Callable[[], str | None] | None = None) -> None:
    """``flwr run`` the app with ``job`` on ``link`` and wait for the run to end; ``home`` is FLWR_HOME;
    ``enter`` prefixes the command (e.g. ``ip netns exec NAME``: submit from another host); ``watch`` as in
    :func:`flwr_run`. A run that ends without its results raises :class:`RuntimeFailure` saying how far the
    checkpoint got and that ``--resume`` continues it."""
    for name in ("done.json", "failed.txt"):
        (job.out / name).unlink(missing_ok=True)
    try:
        flwr_run(APP_DIR, job.run_config(), link, home, timeout, enter, watch)
    except RuntimeFailure as err:
        raise RuntimeFailure(f"{err}{resume_hint(job.out)}") from None
    if (job.out / "failed.txt").exists():
        failure = (job.out / "failed.txt").read_text().strip()
        hint = "" if failure.startswith("CheckpointError") else resume_hint(job.out)  # a resume itself refused
        raise RuntimeFailure(f"the ServerApp failed: {failure}{hint}")
    if not (job.out / "done.json").exists():
        why = watch() if watch is not None else None  # flwr run may have noticed first (a SuperLink gone)
        raise RuntimeFailure(f"the Flower run ended without results{f': {why}' if why else ''} "
                             f"(log: {home / 'flwr-run.log'}){resume_hint(job.out)}")


def write_cli_config(home: Path, link: SuperLinkAddress) -> None:
    """The ``flwr`` command's ``FLWR_HOME/config.toml``: ``link`` as the connection named ``secagg``."""
    home.mkdir(parents=True, exist_ok=True)
    lines = ["[superlink]", 'default = "secagg"', "", "[superlink.secagg]", f"address = {_toml_string(link.address)}",
             f"insecure = {'true' if link.insecure else 'false'}"]
    if link.root_certificates is not None:
        lines.append(f"root-certificates = {_toml_string(str(link.root_certificates.resolve()))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")


def flwr_run(app_dir: Path, run_config: dict[str, str | float | int | bool], link: SuperLinkAddress, home: Path,
             timeout: float, enter: Sequence[str] = (), watch: Callable[[], str | None] | None = None) -> None:
    """``flwr run`` the Flower App in ``app_dir`` with ``run_config`` on ``link``, streaming its log to
    ``home/flwr-run.log``, and wait (at most ``timeout`` s) for the run to end; ``enter`` prefixes the command
    (e.g. ``ip netns exec NAME``: submit from another host). ``watch()`` is asked twice a second meanwhile:
    a reason it returns ends the wait (and ``flwr run``) with :class:`RuntimeFailure`."""
    write_cli_config(home, link)
    config_file = home / "run-config.toml"
    config_file.write_text("".join(f"{key} = {_toml_value(v)}\n" for key, v in run_config.items()))
    app = home / "app"
    shutil.rmtree(app, ignore_errors=True)
    shutil.copytree(app_dir, app)  # flwr builds the bundle in place: never inside the installed package
    command = [*enter, _tool("flwr"), "run", str(app), "secagg", "--run-config", str(config_file), "--stream"]
    with (home / "flwr-run.log").open("w") as log:
        process = subprocess.Popen(command, env=_env(home), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=_die_with_parent())
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"the Flower run did not end within {timeout:.0f} s "
                                     f"(log: {home / 'flwr-run.log'})")
            reason = watch() if watch is not None else None
            if reason is not None:
                raise RuntimeFailure(reason)
            try:
                process.wait(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pass
    finally:
        if process.poll() is None:  # timed out or interrupted: flwr run does not outlive this call
            _signal_group(process, signal.SIGKILL)
            process.wait()


class LocalFlower:
    """A SuperLink and one SuperNode per ``--node-config`` entry, as processes on 127.0.0.1.

    The SuperNodes are of ``kind`` (:class:`NodeKind`): by default ours, each with one long-lived ClientApp
    process (:mod:`federation.flower.executor`) in its process group."""

    def __init__(self, workdir: Path, nodes: Sequence[str], *, kind: NodeKind = NodeKind.LONG_LIVED) -> None:
        self.workdir, self.node_configs, self.kind = Path(workdir), list(nodes), kind
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen] = []
        self.reaper: subprocess.Popen | None = None
        self.marker = f"{self.workdir.resolve()}:{uuid.uuid4().hex}"
        self._handlers: dict[int, Callable | int | None] = {}

    def __enter__(self) -> LocalFlower:
        if threading.current_thread() is threading.main_thread():  # SIGTERM, SIGHUP: unwind to stop(), as Ctrl-C
            self._handlers = {s: signal.signal(s, _terminate) for s in (signal.SIGTERM, signal.SIGHUP)}
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)
            self._handlers = {}

    @property
    def link(self) -> SuperLinkAddress:
        return SuperLinkAddress(f"{LOOPBACK}:{self.port}", insecure=True)

    def start(self, ready_timeout: float = 60.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.reaper = subprocess.Popen([sys.executable, "-c", REAPER, self.marker], stdin=subprocess.PIPE,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)  # out of reach of a signal to this one's group
        self.superlink = self._spawn("superlink", [_tool("flower-superlink"), "--insecure", "--host", LOOPBACK,
                                                   "--port", str(self.port), "--disable-runtime-dependency-installation"])
        _wait_for_port(self.port, ready_timeout, self.superlink)
        for i, node_config in enumerate(self.node_configs):
            self.supernodes.append(self._spawn(f"supernode-{i}", [
                *self._supernode_command(), "--insecure", "--superlink", f"{LOOPBACK}:{self.port}",
                "--host", LOOPBACK, "--port", str(free_port()), "--node-config", node_config]))

    def _supernode_command(self) -> list[str]:
        if self.kind is NodeKind.FLOWER:
            return [_tool("flower-supernode")]
        if self.kind is NodeKind.PER_MESSAGE:
            return [sys.executable, "-m", "federation.flower.supernode", "--isolation", "subprocess"]
        secret = self.workdir / "superexec.secret"  # only our executors may claim the nodes' tasks
        if not secret.exists():
            secret.touch(mode=0o600)
            secret.write_bytes(os.urandom(32))
        return [sys.executable, "-m", "federation.flower.supernode", "--isolation", "process",
                "--superexec-auth-secret-file", str(secret)]

    def run(self, job: FlowerJob, timeout: float = 1800.0) -> None:
        """Submit ``job`` and wait for it; a SuperLink that exits, or a ServerApp process that dies without
        its results, ends the wait within a second (:class:`RunWatch`) with a :class:`RuntimeFailure`."""
        submit(job, self.link, self.workdir / "flwr-home", timeout,
               watch=RunWatch(lambda: self.superlink, self.marker, job.out))

    def kill(self, index: int) -> None:
        """SIGKILL SuperNode ``index`` and its ClientApp processes (a machine that crashed)."""
        _signal_group(self.supernodes[index], signal.SIGKILL)

    def processes(self) -> list[int]:
        """The ids of every live process of this deployment, Flower's own children included."""
        return marked_processes(self.marker)

    def stop(self) -> None:
        """End every process of this deployment: SIGTERM to each process group, SIGKILL after 10 s, then SIGKILL
        to whatever is left with this deployment's marker (Flower starts its SuperExec in a session of its own)."""
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
        deadline = time.monotonic() + 5
        while (left := self.processes()) and time.monotonic() < deadline:
            for pid in left:
                _kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        if self.reaper is not None:  # nothing left to reap: it sweeps once and exits
            self.reaper.communicate()
            self.reaper = None

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        env = {**_env(self.workdir / "flwr-home"), MARKER: self.marker, **_ONE_THREAD}
        with (self.workdir / f"{name}.log").open("w") as log:
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=self.workdir, preexec_fn=_die_with_parent())


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child SIGKILLed when this process dies, however it dies (Linux's
    ``PR_SET_PDEATHSIG``); None where the C library has no ``prctl``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the death signal was armed
            os._exit(1)

    return preexec


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


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


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
