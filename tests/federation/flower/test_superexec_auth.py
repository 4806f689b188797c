"""Only the deployment's own executor may claim a SuperNode's ClientApp tasks: a claim without the per-deployment
SuperExec secret, or with another one, is refused (HTTP 401) by the SuperNode's Runtime API.

The Runtime API here is Flower's own SuperNode app (``flwr.supernode.main.create_app``, what ``flower-supernode``
serves) on a loopback port in this process; the claims are :class:`federation.flower.executor.Executor`'s.
Flower's retry policy answers a 401 by interrupting its own process (an executor with the wrong secret stops);
here the claims are made without it, so the refusal reaches the test as the HTTP error.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr")

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from flwr.supercore.object_store import ObjectStoreFactory  # noqa: E402
from flwr.supernode.main import create_app  # noqa: E402
from flwr.supernode.nodestate import NodeStateFactory  # noqa: E402

from federation.flower import executor  # noqa: E402
from federation.flower.launcher import LocalFlower  # noqa: E402
from federation.flower.live import LIVE  # noqa: E402


@pytest.fixture
def runtime_api():
    """A SuperNode's Runtime API guarded by a fresh secret: (address, secret)."""
    secret = os.urandom(32)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(state_factory=NodeStateFactory(objectstore_factory=ObjectStoreFactory()),
                     superexec_auth_secret=secret)
    server = uvicorn.Server(uvicorn.Config(app=app, host="127.0.0.1", port=port, log_level="critical",
                                           ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the Runtime API did not start"
        time.sleep(0.01)
    yield f"127.0.0.1:{port}", secret
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def claimant(monkeypatch):
    """Executors whose claims are not retried (a 401 raises here instead of interrupting this process)."""
    monkeypatch.setattr(executor, "make_simple_http_retry_invoker", lambda: None)
    monkeypatch.setattr(LIVE, "enabled", LIVE.enabled)  # an Executor enables the process-wide cache: restored
    return lambda address, secret: executor.Executor(address, auth_secret=secret)


@pytest.mark.parametrize("claim", ["no secret", "another deployment's secret"])
def test_a_task_claim_without_the_deployment_s_secret_is_refused(runtime_api, claimant, claim):
    address, secret = runtime_api
    forged = None if claim == "no secret" else os.urandom(32)
    with pytest.raises(httpx.HTTPStatusError) as refused:
        claimant(address, forged).serve_one()
    assert refused.value.response.status_code == 401
    assert claimant(address, secret).serve_one() is False  # the deployment's own executor may claim: none pending


def test_each_local_deployment_has_its_own_secret_only_its_user_can_read(tmp_path: Path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    commands = [LocalFlower(tmp_path / name, [])._supernode_command() for name in ("a", "b")]
    files = [Path(c[c.index("--superexec-auth-secret-file") + 1]) for c in commands]
    assert all(f.stat().st_mode & 0o077 == 0 and len(f.read_bytes()) == 32 for f in files)
    assert files[0].read_bytes() != files[1].read_bytes()
