"""A long-lived ClientApp process for one SuperNode: every message of our app answered in the same process.

Flower's default (``flower-supernode`` with ``--isolation subprocess``) starts a ``flwr-clientapp`` process
per message, which imports torch and rebuilds the client's data and model each time. With ``--isolation
process`` a SuperNode leaves its tasks to an outside process; this is one. It claims the SuperNode's
ClientApp tasks through its Runtime API (``AcquireTask``), and runs each the way ``flwr-clientapp`` does
(pull the message and context, call the app, push the reply and the context back), only without exiting, so
what the node builds stays live between messages (see :mod:`federation.flower.live`). It serves our app
only (the FAB's ``clientapp`` must be ``federation.flower.client_app:app``); a task of another app is
answered with an error.

Run it beside its SuperNode (``python -m federation.flower.supernode`` starts both), or by hand::

    python -m federation.flower.executor --runtime-api-address 127.0.0.1:9094 --insecure --parent-pid PID
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.common.config import get_fab_config
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import (RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor,
                                        SuperExecAuthHttpInterceptor)
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime import run_clientapp
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from federation.flower.live import LIVE
from federation.flower.polling import Backoff, shorten_object_retries

OUR_CLIENTAPP = "federation.flower.client_app:app"
ACQUIRE_TASK = "/flwr.proto.Runtime/AcquireTask"
log = logging.getLogger(__name__)


class Executor:
    """Claims and runs the ClientApp tasks of the SuperNode whose Runtime API is at ``address``."""

    def __init__(self, address: str, insecure: bool = True, root_certificates: bytes | None = None,
                 auth_secret: bytes | None = None) -> None:
        from federation.flower.client_app import app  # torch and the app imported once, before any message

        _prewarm()
        shorten_object_retries(run_clientapp, "pull_and_inflate_object_from_tree")
        self.address, self.insecure, self.root_certificates = address, insecure, root_certificates
        self.auth_secret = auth_secret
        self.app = app
        self.ours: dict[str, bool] = {}  # FAB hash -> whether its ClientApp is ours
        self.client = self._client()
        LIVE.enable()

    def _client(self, token: str | None = None) -> RuntimeHttpClient:
        interceptors = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp" if token else "SuperExec")]
        if token is not None:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        elif self.auth_secret:  # claiming tasks is what the SuperNode's SuperExec secret guards
            interceptors.append(SuperExecAuthHttpInterceptor(master_secret=self.auth_secret,
                                                             protected_methods=frozenset({ACQUIRE_TASK})))
        return RuntimeHttpClient.from_server_address(server_address=self.address, insecure=self.insecure,
                                                     root_certificates=self.root_certificates,
                                                     interceptors=interceptors,
                                                     retry_invoker=make_simple_http_retry_invoker())

    def serve_forever(self, poll: Backoff | None = None) -> None:
        """Claim tasks until the process is stopped; between empty claims wait a quarter of the idle time so
        far (10 ms to 0.5 s)."""
        poll = poll or Backoff(0.01, 0.5)
        while True:
            try:
                served = self.serve_one()
            except httpx.HTTPError as err:  # the SuperNode not up yet, or restarting: try again
                log.warning("the SuperNode's Runtime API did not answer: %s", err)
                served = False
            if served:
                poll.busy()
            else:
                poll.wait()

    def serve_one(self) -> bool:
        """Claim one pending ClientApp task and run it; False if there was none."""
        claimed = self.client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
        if not (claimed.HasField("task") and claimed.token):
            return False
        self.run_task(claimed.token)
        return True

    def run_task(self, token: str) -> None:
        """One task, as ``flwr-clientapp`` runs it: pull its message and context, answer, push both back."""
        client = self._client(token)
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message = reply = context = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            message, context, _run, fab = pull_task_input(client)
            if not self._is_ours(fab.hash_str, fab.content):
                details = f"this SuperNode runs only the ClientApp {OUR_CLIENTAPP}"
                reply = Message(Error(code=ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason=details), reply_to=message)
            else:
                started = time.perf_counter()
                reply = self.app(message=message, context=context)
                status, details = SubStatus.COMPLETED, ""
                log.info("%s of run %d (group %s) answered in %.3f s", message.metadata.message_type,
                         context.run_id, message.metadata.group_id, time.perf_counter() - started)
        except Exception as err:  # pylint: disable=broad-exception-caught  (the process serves the next task)
            log.exception("the ClientApp raised")
            details = f"{type(err)}:<'{err}'>"
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, status, details)
            except Exception:  # pylint: disable=broad-exception-caught
                log.exception("could not push the ClientApp's answer")
            heartbeat.stop()
            client.close()

    def _is_ours(self, fab_hash: str, content: bytes) -> bool:
        if fab_hash not in self.ours:
            components = get_fab_config(content).get("tool", {}).get("flwr", {}).get("app", {}).get("components", {})
            self.ours[fab_hash] = components.get("clientapp") == OUR_CLIENTAPP
        return self.ours[fab_hash]


def _prewarm() -> None:
    """Import what the built-in job's first message needs (scikit-learn's datasets, a few seconds) now, while
    the node waits for its first run, not while the server waits for its greeting."""
    try:
        import sklearn.datasets  # noqa: F401
        import sklearn.model_selection  # noqa: F401
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A long-lived ClientApp process for one SuperNode "
                                                 "(started with --isolation process)")
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API, host:port")
    parser.add_argument("--insecure", action="store_true", help="the Runtime API has no TLS (loopback only)")
    parser.add_argument("--root-certificates", type=Path, help="CA certificate of the Runtime API's TLS")
    parser.add_argument("--parent-pid", type=int, help="exit when this process (the SuperNode) is gone")
    parser.add_argument("--superexec-auth-secret-file", type=Path,
                        help="the secret the SuperNode was given to authenticate who claims its tasks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(created).3f %(levelname)s executor: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per Runtime API call
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)
    certificates = None if args.insecure else args.root_certificates.read_bytes() if args.root_certificates else None
    try:
        secret = args.superexec_auth_secret_file.read_bytes() if args.superexec_auth_secret_file else None
        Executor(args.runtime_api_address, insecure=args.insecure, root_certificates=certificates,
                 auth_secret=secret).serve_forever()
    except KeyboardInterrupt:  # the parent monitor's SIGINT
        os._exit(0)


if __name__ == "__main__":
    main()
