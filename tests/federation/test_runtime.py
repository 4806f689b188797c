"""The in-process runtime drives any staged aggregator, injects dropouts and measures real message sizes."""

import numpy as np

from federation.runtime import ClientStatus, InProcessRuntime
from secagg.aggregation import AggregateResult, RoundContext
from secagg.errors import AggregationAborted, UpdateRejected
from secagg.plaintext import PlaintextAggregator

from tests.federation.helpers import toy_client

DIM = 8


class ThreeStageAggregator:
    """A fake protocol: three uploads per client, only the last one counts. Records what it saw."""

    stages = 3

    def __init__(self):
        self.seen: list[tuple[int, int]] = []

    def client_session(self, ctx, client_id, update, weight):
        agg = self

        class Client:
            def start(self):
                return b"stage0"

            def handle(self, message):
                return message + b"+"

        return Client()

    def server_session(self, ctx):
        agg = self

        class Server:
            stage = 0
            finished = False
            senders: list[int] = []

            def collect(self, sender, message):
                agg.seen.append((self.stage, sender))
                self.senders.append(sender)

            def close_stage(self):
                self.stage += 1
                if self.stage == 3:
                    self.finished = True
                    return {}
                last, self.senders = self.senders, []
                return {c: b"s" * self.stage for c in last}

            def result(self):
                if not self.senders:
                    raise AggregationAborted("nobody left")
                return AggregateResult(np.zeros(ctx.dimension, np.float32), 1.0, tuple(self.senders))

        return Server()


def run(aggregator, drop_stage, clients=(0, 1, 2)):
    ctx = RoundContext.new(1, clients, DIM)
    toy = {c: toy_client(seed=c) for c in clients}
    return InProcessRuntime().run_round(ctx, np.zeros(DIM, np.float32), toy, {c: c for c in clients}, drop_stage,
                                        aggregator)


def test_plaintext_round_measures_message_bytes():
    out = run(PlaintextAggregator(), {})
    assert out.result is not None and out.result.contributors == (0, 1, 2)
    header, array_header = 34, 2 + 8
    for report in out.clients.values():
        assert report.status is ClientStatus.OK
        assert report.bytes_down == header + array_header + 4 * DIM
        assert report.bytes_up == header + array_header + 4 * DIM + 8


def test_dropouts_happen_at_the_planned_stage():
    agg = ThreeStageAggregator()
    out = run(agg, {1: 1, 2: 2})
    assert out.result.contributors == (0,)
    stages_of = {c: sorted(s for s, sender in agg.seen if sender == c) for c in (0, 1, 2)}
    assert stages_of == {0: [0, 1, 2], 1: [0], 2: [0, 1]}
    assert out.clients[1].status is ClientStatus.DROPPED and "stage 1" in out.clients[1].reason


def test_drop_before_first_upload_skips_training():
    out = run(PlaintextAggregator(), {0: 0})
    assert out.clients[0].status is ClientStatus.DROPPED
    assert out.clients[0].train_seconds == 0 and out.clients[0].bytes_up == 0
    assert out.result.contributors == (1, 2)


def test_everyone_dropping_aborts_the_round_cleanly():
    out = run(PlaintextAggregator(), {0: 0, 1: 0, 2: 0})
    assert out.result is None and "min_clients" in out.abort_reason


def test_rejected_update_is_excluded_and_the_round_continues():
    class NaNAggregator(PlaintextAggregator):
        def client_session(self, ctx, client_id, update, weight):
            if client_id == 1:
                update = np.full_like(update, np.nan)
                from secagg.plaintext import PlaintextClient, encode_update

                session = PlaintextClient(ctx, client_id, np.zeros_like(update), weight)
                session._message = encode_update(ctx, client_id, update, weight)
                return session
            return super().client_session(ctx, client_id, update, weight)

    out = run(NaNAggregator(), {})
    assert out.clients[1].status is ClientStatus.REJECTED
    assert UpdateRejected.__name__ in out.clients[1].reason
    assert out.result.contributors == (0, 2)


def test_uploads_reach_the_server_as_each_client_makes_them():
    """Streaming: client 0's upload is collected before client 1 trains, so the runtime holds one at a time."""
    events = []

    class Recording(ThreeStageAggregator):
        def client_session(self, ctx, client_id, update, weight):
            events.append(("session", client_id))
            return super().client_session(ctx, client_id, update, weight)

        def server_session(self, ctx):
            server = super().server_session(ctx)
            collect = server.collect

            def recording_collect(sender, message):
                events.append(("collect", sender))
                collect(sender, message)

            server.collect = recording_collect
            return server

    run(Recording(), {})
    assert events[:6] == [("session", 0), ("collect", 0), ("session", 1), ("collect", 1), ("session", 2),
                          ("collect", 2)]


def test_memory_error_stops_the_run_with_a_typed_error_naming_the_sizes():
    import pytest
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from federation import Federation
    from federation.errors import OutOfMemory

    class Exhausting(PlaintextAggregator):
        def server_session(self, ctx):
            server = super().server_session(ctx)

            def collect(sender, message):
                raise MemoryError("Unable to allocate 7.45 GiB for an array with shape (1000000000,)")

            server.collect = collect
            return server

    model = torch.nn.Linear(3, 2)
    data = TensorDataset(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    federation = Federation(model, rounds=2, aggregator=Exhausting())
    federation.add_client(DataLoader(data), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(OutOfMemory, match=r"round 1 ran out of memory \(Unable to allocate 7.45 GiB.*1 clients x 8 "):
        federation.run()
