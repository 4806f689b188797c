"""The long-lived ClientApp process's pieces, without processes: the per-run cache, which app it serves, and
the waits between polls."""

from __future__ import annotations

import io
import time
import zipfile
from types import SimpleNamespace

import pytest

pytest.importorskip("flwr")

from flwr.app import Context, RecordDict  # noqa: E402

from federation.flower.executor import Executor  # noqa: E402
from federation.flower.launcher import APP_DIR  # noqa: E402
from federation.flower.live import LiveNode  # noqa: E402
from federation.flower.polling import Backoff, PollClock  # noqa: E402
from federation.flower.supernode import _options  # noqa: E402

MINIMAL_DIR = APP_DIR.parent / "minimal"


def _context(run: int, node: int) -> Context:
    return Context(run_id=run, node_id=node, node_config={}, state=RecordDict(), run_config={})


def test_a_process_per_message_keeps_nothing():
    assert LiveNode().run(_context(1, 1)) is None


def test_what_a_node_keeps_is_its_run_s_own_and_old_runs_are_let_go():
    live = LiveNode()
    live.enable()
    first = live.run(_context(1, 7))
    first.client = "run 1's client"
    assert live.run(_context(1, 7)) is first
    assert live.run(_context(1, 8)).client is None  # another node (in-process tests host several)
    assert live.run(_context(2, 7)).client is None  # another run: nothing shared
    live.run(_context(3, 7))
    assert live.run(_context(1, 7)).client is None  # run 1 was dropped once two later runs came


def _fab(app_dir) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as fab:
        fab.writestr("pyproject.toml", (app_dir / "pyproject.toml").read_text())
    return buffer.getvalue()


def test_the_executor_serves_our_app_only():
    executor = SimpleNamespace(ours={})
    assert Executor._is_ours(executor, "a", _fab(APP_DIR))
    assert not Executor._is_ours(executor, "b", _fab(MINIMAL_DIR))  # another Flower app: an error reply


def test_polls_are_short_after_work_and_longer_while_idle(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    backoff = Backoff(0.01, 0.5, share=0.25)
    assert backoff.interval() == 0.01
    clock[0] += 1.0
    assert backoff.interval() == pytest.approx(0.25)
    clock[0] += 10.0
    assert backoff.interval() == 0.5
    backoff.busy()
    assert backoff.interval() == 0.01


def test_the_supernode_loop_keeps_other_waits_and_time_functions(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    poll = PollClock(0.05)
    poll.sleep(0.5)  # waiting for the ClientApp's answer
    poll.sleep(3)  # an empty pull
    poll.sleep(7)  # any other wait is Flower's own
    assert slept[0] == 0.01 and 0.05 <= slept[1] <= 1.0 and slept[2] == 7
    assert poll.time() == pytest.approx(time.time(), abs=5)


def test_the_supernode_command_passes_flower_s_options_through():
    ours, rest = _options(["--superlink", "h:1", "--node-config", "partition-id=0", "--port", "9", "--insecure"])
    assert (ours.isolation, ours.port, ours.poll_interval) == ("process", 9, 0.05)
    assert rest == ["--superlink", "h:1", "--node-config", "partition-id=0", "--insecure"]
    with pytest.raises(SystemExit):
        _options(["--poll-interval", "0"])
