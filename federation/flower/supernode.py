"""``python -m federation.flower.supernode``: a Flower SuperNode with a long-lived ClientApp and short polls.

Takes ``flower-supernode``'s own options and adds two things:

* ``--isolation process`` (the default here): the SuperNode leaves its ClientApp tasks to an outside process,
  and this command starts one, :mod:`federation.flower.executor`, as its child (again if it ends). It serves
  every message of our app in the same process, so the node's data, model and sessions stay live across
  messages and rounds.
  ``--isolation subprocess`` keeps Flower's process per message (our app then suspends its sessions into the
  node's context between stages).
* ``--poll-interval S`` (default 0.05): Flower 1.42's SuperNode waits a fixed 3 s after each empty pull
  from the SuperLink and 0.5 s between checks for its ClientApp's reply, which adds seconds to every message.
  Here an empty pull is followed by a wait of a quarter of the time the node has been idle, between ``S``
  and 1 s, the reply is checked every 10 ms, and an object not yet uploaded is asked for again within
  10 ms, not 1 s (see :mod:`federation.flower.polling`).
  ``--poll-interval 3`` restores Flower's own timing.

Every other option goes to ``flower-supernode`` unchanged (``--superlink``, ``--node-config``, TLS, node
authentication); the executor is given the Runtime API's address (``--host``/``--port``), its CA
(``--ssl-ca-certfile`` when ``--ssl-certfile`` is set) and ``--superexec-auth-secret-file``, the secret that
keeps other local processes from claiming the node's tasks (use it on a machine shared with others).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from federation.flower.polling import patch_supernode_loop

PR_SET_PDEATHSIG = 1


def _options(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--isolation", default="process", choices=["process", "subprocess"])
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9094)
    parser.add_argument("--ssl-certfile")
    parser.add_argument("--ssl-ca-certfile")
    parser.add_argument("--superexec-auth-secret-file")
    ours, rest = parser.parse_known_args(argv)
    if not ours.poll_interval > 0:
        parser.error("--poll-interval must be positive seconds")
    return ours, rest


def keep_executor(options: argparse.Namespace) -> threading.Thread:
    """Start the executor, and start it again whenever it fails (a crash loses only what it kept in memory:
    the next message rebuilds the client; the node's context keeps its keys and enrolment)."""

    def watch() -> None:
        while True:
            code = start_executor(options).wait()
            if code == 0:  # asked to stop (SIGTERM, or this process going away)
                return
            print(f"the ClientApp executor ended with status {code}; starting it again", file=sys.stderr)
            time.sleep(1.0)

    thread = threading.Thread(target=watch, name="executor-watch", daemon=True)
    thread.start()
    return thread


def start_executor(options: argparse.Namespace) -> subprocess.Popen:
    """The long-lived ClientApp process, a child of this one that dies with it."""
    host = f"[{options.host}]" if ":" in options.host else options.host
    command = [sys.executable, "-m", "federation.flower.executor", "--runtime-api-address",
               f"{host}:{options.port}", "--parent-pid", str(os.getpid())]
    if options.ssl_certfile is None:
        command.append("--insecure")
    elif options.ssl_ca_certfile is not None:
        command += ["--root-certificates", options.ssl_ca_certfile]
    if options.superexec_auth_secret_file is not None:
        command += ["--superexec-auth-secret-file", options.superexec_auth_secret_file]
    return subprocess.Popen(command, preexec_fn=_die_with_parent())


def _die_with_parent() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    options, rest = _options(argv)
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.cli.flower_supernode import flower_supernode

    patch_supernode_loop(loop, options.poll_interval)
    forwarded = ["--isolation", options.isolation, "--host", options.host, "--port", str(options.port)]
    for name in ("ssl_certfile", "ssl_ca_certfile", "superexec_auth_secret_file"):
        if getattr(options, name) is not None:
            forwarded += [f"--{name.replace('_', '-')}", getattr(options, name)]
    if options.isolation == "process":
        keep_executor(options)
    else:  # Flower's own executor, which starts a ClientApp per message: it looks for tasks as often
        os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", str(max(options.poll_interval, 0.01)))
    sys.argv = ["flower-supernode", *rest, *forwarded]
    sys.exit(flower_supernode())


if __name__ == "__main__":
    main()
