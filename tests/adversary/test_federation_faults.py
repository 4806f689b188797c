"""Fault injection against the round loop: one lying or broken party never stops the federation.

Each test makes one client (or the server session) misbehave and checks that the offending client is
rejected or the round aborted, that later rounds still run, and that ``run`` returns normally. Faults that
are nobody's fault (out of memory, Ctrl-C) still stop the run, and an output directory that cannot be
written ends ``secagg run`` with a one-line error while the files already there are kept.
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from federation import checkpoint
from federation.cli import main
from federation.client import train_epoch
from federation.errors import OutputError
from federation.params import get_vector
from federation.runtime import ClientStatus, InProcessRuntime
from federation.server import Federation, RoundStatus
from secagg.aggregation import AggregateResult
from secagg.errors import AggregationAborted, ConfigurationError, ProtocolError
from secagg.plaintext import PlaintextAggregator

ROUNDS = 3
LIAR = 1


def toy_data(seed: int, n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def federation(aggregator=None, train_fns=None, clients: int = 3, rounds: int = ROUNDS, **kwargs) -> Federation:
    """A three-client toy job; ``train_fns[c]`` replaces client ``c``'s training step."""
    torch.manual_seed(0)
    fed = Federation(nn.Linear(3, 2), test_data=toy_data(99, 64), aggregator=aggregator, rounds=rounds, **kwargs)
    for c in range(clients):
        model = nn.Linear(3, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        fed.add_client(DataLoader(toy_data(c), batch_size=8, shuffle=True), optimizer,
                       (train_fns or {}).get(c, train_epoch), model=model)
    return fed


def assert_liar_rejected_every_round(history, reason: str) -> None:
    assert len(history) == ROUNDS
    for h in history:
        assert h.status is RoundStatus.OK, h.abort_reason
        assert h.rejected == [LIAR] and h.survivors == 2
        liar = next(p for p in h.per_client if p["client"] == LIAR)
        assert liar["status"] == ClientStatus.REJECTED.value and reason in liar["reason"]


# --- a fake two-stage protocol whose server parses bytes as carelessly as a C library would -------------


class TwoStage:
    """Stage 0: the float32 update behind a kind byte; stage 1: a confirmation. Only confirmed updates count.

    The server's parser validates nothing, so crafted bytes raise what its building blocks raise:
    IndexError (empty message), KeyError (unknown kind), ValueError (a length that is no float32 array).
    """

    stages = 2
    KINDS = {1: "update"}

    def __init__(self, lie=None, fault_in=None):
        self.lie = lie or {}  # client -> the bytes it sends at stage 0 instead of its update
        self.fault_in = fault_in or {}  # (client, "start" | "handle") -> exception its session raises

    def client_session(self, ctx, client_id, update, weight):
        owner = self

        class Client:
            def start(self):
                if (client_id, "start") in owner.fault_in:
                    raise owner.fault_in[(client_id, "start")]
                return owner.lie.get(client_id, bytes([1]) + np.asarray(update, np.float32).tobytes())

            def handle(self, message):
                if (client_id, "handle") in owner.fault_in:
                    raise owner.fault_in[(client_id, "handle")]
                return b"confirm"

        return Client()

    def server_session(self, ctx):
        class Server:
            finished = False
            stage = 0

            def __init__(self):
                self.updates, self.confirmed = {}, []

            def collect(self, sender, message):
                if self.stage == 0:
                    TwoStage.KINDS[message[0]]
                    self.updates[sender] = np.frombuffer(message[1:], dtype=np.float32).reshape(ctx.dimension)
                else:
                    self.confirmed.append(sender)

            def close_stage(self):
                self.stage += 1
                if self.stage == 2:
                    self.finished = True
                    return {}
                return {c: b"ack" for c in self.updates}

            def result(self):
                if len(self.confirmed) < ctx.min_clients:
                    raise AggregationAborted("nobody confirmed")
                mean = np.mean([self.updates[c] for c in self.confirmed], axis=0)
                return AggregateResult(mean.astype(np.float32), float(len(self.confirmed)),
                                       tuple(sorted(self.confirmed)))

        return Server()


@pytest.mark.parametrize("crafted, raised", [
    (b"", "IndexError"),
    (b"\x07" + bytes(8), "KeyError"),
    (b"\x01" + bytes(5), "ValueError"),
])
def test_a_message_that_makes_collect_raise_rejects_its_sender(crafted, raised, caplog):
    fed = federation(TwoStage(lie={LIAR: crafted}))
    before = get_vector(fed.model)
    with caplog.at_level("WARNING"):
        history = fed.run()
    assert_liar_rejected_every_round(history, raised)
    assert not np.array_equal(get_vector(fed.model), before)  # the honest clients' rounds were applied
    assert "Traceback" in caplog.text  # not a deliberate refusal: the operator sees where it came from


@pytest.mark.parametrize("where, error", [
    ("start", RuntimeError("session broke")),
    ("start", ZeroDivisionError("division by zero")),
    ("handle", KeyError("missing")),
    ("handle", ProtocolError("refuses the server's message")),
])
def test_a_client_session_that_raises_is_rejected(where, error):
    history = federation(TwoStage(fault_in={(LIAR, where): error})).run()
    assert_liar_rejected_every_round(history, type(error).__name__)


def test_a_training_function_that_raises_rejects_that_client():
    def broken(model, loader, optimizer):
        raise RuntimeError("CUDA error: device-side assert triggered")

    fed = federation(train_fns={LIAR: broken})
    history = fed.run()
    assert_liar_rejected_every_round(history, "CUDA error")
    assert history[-1].accuracy >= 0.8


def test_a_1e30_update_in_plaintext_mode_moves_the_model_by_at_most_the_clip():
    def huge(model, loader, optimizer):
        train_epoch(model, loader, optimizer)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e30)

    fed = federation(train_fns={LIAR: huge})
    before = get_vector(fed.model)
    history = fed.run()
    assert len(history) == ROUNDS and all(h.status is RoundStatus.OK for h in history)
    after = get_vector(fed.model)
    assert np.isfinite(after).all()
    # FedAvg with server rate 1: each round moves a coordinate by a weighted mean of values clipped to +-1
    assert np.abs(after - before).max() <= ROUNDS * 1.0 + 1e-6


def test_a_nan_update_is_rejected_not_clipped():
    def nan(model, loader, optimizer):
        train_epoch(model, loader, optimizer)
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))

    history = federation(train_fns={LIAR: nan}).run()
    assert_liar_rejected_every_round(history, "UpdateRejected")


# --- the server session gives up: the round aborts, the federation goes on ----------------------------


class FailingServer(PlaintextAggregator):
    """Plaintext, except that in round ``round`` the server session raises ``error`` at ``where``."""

    def __init__(self, round: int, where: str, error: Exception):
        super().__init__()
        self.round, self.where, self.error = round, where, error

    def server_session(self, ctx):
        if ctx.round == self.round and self.where == "server_session":
            raise self.error
        inner, owner = super().server_session(ctx), self
        failing = ctx.round == self.round

        class Server:
            @property
            def finished(self):
                return inner.finished

            def collect(self, sender, message):
                inner.collect(sender, message)

            def close_stage(self):
                if failing and owner.where == "close_stage":
                    raise owner.error
                return inner.close_stage()

            def result(self):
                if failing and owner.where == "result":
                    raise owner.error
                return inner.result()

        return Server()


@pytest.mark.parametrize("where, error, reason", [
    # an absolute threshold above what this round's survivors can meet
    ("close_stage", ConfigurationError("threshold 5 exceeds the 2 neighbours of each client"), "threshold 5"),
    ("close_stage", AggregationAborted("2 survivors, below the threshold t=5"), "below the threshold"),
    ("result", ZeroDivisionError("float division by zero"), "ZeroDivisionError"),
    ("server_session", ConfigurationError("threshold 5 exceeds the 2 neighbours of each client"), "threshold 5"),
])
def test_a_server_session_that_gives_up_aborts_only_its_round(where, error, reason):
    calls = []

    def counting(model, loader, optimizer):
        calls.append(1)
        return train_epoch(model, loader, optimizer)

    fed = federation(FailingServer(2, where, error), train_fns={c: counting for c in range(3)})
    history = fed.run()
    assert [h.status for h in history] == [RoundStatus.OK, RoundStatus.ABORTED, RoundStatus.OK]
    assert reason in history[1].abort_reason and history[1].survivors == 0
    if where == "server_session":  # refused before anyone trains
        assert len(calls) == 6


def test_a_runtime_that_refuses_a_round_aborts_it():
    class Refusing(InProcessRuntime):
        def run_round(self, ctx, *args):
            if ctx.round == 2:
                raise ProtocolError("only 2 clients advertised keys: below the threshold")
            return super().run_round(ctx, *args)

    history = federation(runtime=Refusing()).run()
    assert [h.status for h in history] == [RoundStatus.OK, RoundStatus.ABORTED, RoundStatus.OK]
    assert "below the threshold" in history[1].abort_reason


# --- nobody's fault: the run stops ---------------------------------------------------------------------


@pytest.mark.parametrize("error", [MemoryError(), KeyboardInterrupt()])
def test_out_of_memory_and_interrupts_still_stop_the_run(error):
    def failing(model, loader, optimizer):
        raise error

    with pytest.raises(type(error)):
        federation(train_fns={LIAR: failing}).run()
    with pytest.raises(type(error)):
        federation(FailingServer(1, "close_stage", error)).run()


# --- an output directory that cannot be written ---------------------------------------------------------


def failing_replace(monkeypatch, directory, name=None):
    """``os.replace`` into ``directory`` (only onto ``name``, if given) fails as on a full disk."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        dst = os.fspath(dst)
        if os.path.dirname(os.path.abspath(dst)) == os.path.abspath(directory) and \
                (name is None or os.path.basename(dst) == name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_a_failed_checkpoint_write_is_a_typed_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    federation(checkpoint_dir=tmp_path).run()
    kept = (tmp_path / checkpoint.CHECKPOINT_NAME).read_bytes()
    failing_replace(monkeypatch, tmp_path)
    fed = federation(checkpoint_dir=tmp_path, rounds=ROUNDS + 2)
    with pytest.raises(OutputError, match="No space left on device") as raised:
        fed.run(resume=True)
    assert raised.value.path == tmp_path / checkpoint.CHECKPOINT_NAME
    assert (tmp_path / checkpoint.CHECKPOINT_NAME).read_bytes() == kept
    assert checkpoint.load(tmp_path).round == ROUNDS
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.CHECKPOINT_NAME]  # no temporary left


CLI_JOB = ["run", "--clients", "4", "--local-epochs", "1", "--quiet", "--dp", "central", "--noise-multiplier", "0.5"]
OUTPUTS = ("checkpoint.npz", "ledger.json", "results.json")


@pytest.mark.parametrize("failing", [None, "checkpoint.npz", "results.json"])  # None: the ledger fails first
def test_a_full_out_directory_ends_secagg_run_with_one_line_and_keeps_the_files(tmp_path, monkeypatch, capsys,
                                                                                 failing):
    assert main([*CLI_JOB, "--rounds", "1", "--out", str(tmp_path)]) == 0
    before = {name: (tmp_path / name).read_bytes() for name in OUTPUTS}
    capsys.readouterr()

    with monkeypatch.context() as m:
        failing_replace(m, tmp_path, failing)
        assert main([*CLI_JOB, "--rounds", "3", "--resume", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("secagg: error:"))
    assert "cannot write" in line and "No space left on device" in line and "--resume" in line
    if failing is not None:
        assert str(tmp_path / failing) in line
    for name in OUTPUTS if failing is None else (failing,):
        assert (tmp_path / name).read_bytes() == before[name]  # the last good copy, untouched
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert checkpoint.load(tmp_path).round == (2 if failing == "results.json" else 1)

    assert main([*CLI_JOB, "--rounds", "3", "--resume", "--out", str(tmp_path)]) == 0  # space is back
    assert checkpoint.load(tmp_path).round == 3


def test_an_out_path_under_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main([*CLI_JOB, "--rounds", "1", "--out", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "secagg: error: cannot write" in err
