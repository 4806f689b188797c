"""Security review of DP on Flower: a ServerApp or a client that lies. Each test is one attack; the honest side
must refuse it with a typed error (an ``error`` answer from a node, a rejected client on the server) and never
train, noise or release beyond its own settings, and one bad party never stops the federation."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

pytest.importorskip("flwr")

from flwr.app import Message  # noqa: E402

from dp.ledger import PrivacyLedger  # noqa: E402
from federation.experiment import DPMode, ExperimentConfig, PrivacySettings, SecureMode  # noqa: E402
from federation.flower import client_app, server_app  # noqa: E402
from federation.flower.codec import decode_context, encode_context  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from tests.federation.flower.test_apps_in_process import flower_messages, long_lived  # noqa: E402,F401
from tests.federation.flower.test_dp_on_flower import TamperingGrid, _record  # noqa: E402


def _config(dp: DPMode, secure: SecureMode, privacy: dict, rounds: int = 1) -> ExperimentConfig:
    """Small and fast: two clients (a masked sum needs two), one round unless told, large batches."""
    return ExperimentConfig(clients=2, rounds=rounds, local_epochs=1, hidden=8, batch_size=128, secure=secure,
                            dp=dp, seed=2, privacy=PrivacySettings(**privacy))


def _rounds(job: FlowerJob) -> list[dict]:
    return json.loads((job.out / "results.json").read_text())["rounds"]


def _answer(reply: Message) -> dict:
    return dict(_record(reply))


class Recording(TamperingGrid):
    """Keeps every train message the server sent, by (node, round), to replay them afterwards."""

    def __init__(self, job: FlowerJob) -> None:
        self.sent: dict[tuple[int, int], Message] = {}
        super().__init__(job, outgoing=self._keep)

    def _keep(self, message: Message) -> None:
        if message.metadata.message_type == "query.train":
            ctx = decode_context(_record(message)["ctx"])
            self.sent[(message.metadata.dst_node_id, ctx.round)] = message

    def again(self, node: int, rnd: int, ctx=None) -> dict:
        """The train message of ``rnd`` to ``node`` sent once more (with ``ctx``: another round context), as a
        server that deviates would, straight to the node's handler."""
        old = self.sent[(node, rnd)]
        content = {k: v for k, v in _record(old).items()}
        if ctx is not None:  # the broadcast names its round and session too: made again for the new ctx
            from federation.messages import decode_broadcast, encode_broadcast

            params = decode_broadcast(decode_context(content["ctx"]), content["broadcast"])
            content["ctx"], content["broadcast"] = encode_context(ctx), encode_broadcast(ctx, params)
        from federation.flower.codec import payload

        message = Message(payload(**content), dst_node_id=node, message_type="query.train", group_id=str(rnd))
        message.metadata.__dict__["_message_id"] = f"replay-{node}-{rnd}"
        return _answer(client_app.train(message, self.contexts[node]))


# --- a server that replays or invents rounds: a node trains (and spends) more than its settings allow -------

DP_SGD = (DPMode.LOCAL, SecureMode.NONE, dict(target_epsilon=8.0))
DISTRIBUTED = (DPMode.DISTRIBUTED, SecureMode.MASK, dict(noise_multiplier=0.5))


@pytest.mark.parametrize("process", ["per-message", "long-lived"])
@pytest.mark.parametrize("dp, secure, privacy", [DP_SGD, DISTRIBUTED], ids=["dpsgd", "distributed-mask"])
def test_a_replayed_train_message_is_refused(tmp_path, dp, secure, privacy, process, request):
    """Each train message runs DP-SGD (or adds a fresh noise share) once more: the node checked the noise
    multiplier for ``rounds`` rounds, so a round it already trained must not be trained again."""
    if process == "long-lived":
        request.getfixturevalue("long_lived")
    job = FlowerJob(_config(dp, secure, privacy), tmp_path / "out")
    grid = Recording(job)
    server_app.run(grid, job)
    assert [r["status"] for r in _rounds(job)] == ["ok"]
    answer = grid.again(10, 1)
    assert "error" in answer and "upload" not in answer, sorted(answer)
    assert "round" in answer["error"]


@pytest.mark.parametrize("dp, secure, privacy", [DP_SGD, DISTRIBUTED], ids=["dpsgd", "distributed-mask"])
def test_a_round_beyond_the_run_s_rounds_is_refused(tmp_path, dp, secure, privacy):
    """A server that goes on after the last round (fresh session, round ``rounds + 1``): the node's epsilon
    would pass the target it checked the announced noise against."""
    import os

    job = FlowerJob(_config(dp, secure, privacy), tmp_path / "out")
    grid = Recording(job)
    server_app.run(grid, job)
    ctx = decode_context(_record(grid.sent[(10, 1)])["ctx"])
    answer = grid.again(10, 1, replace(ctx, session=os.urandom(len(ctx.session)), round=2))
    assert "error" in answer and "upload" not in answer, sorted(answer)


def test_rounds_out_of_order_are_refused(tmp_path):
    """Round 2 trained, then round 1 (a fresh session): replayed in another order, still a round too many."""
    import os

    job = FlowerJob(_config(*DP_SGD, rounds=2), tmp_path / "out")
    grid = Recording(job)
    server_app.run(grid, job)
    ctx = decode_context(_record(grid.sent[(11, 1)])["ctx"])
    answer = grid.again(11, 1, replace(ctx, session=os.urandom(len(ctx.session))))
    assert "error" in answer and "upload" not in answer, sorted(answer)


# --- malformed JSON: a typed refusal, never a crash ---------------------------------------------------------

def test_a_client_s_deeply_nested_events_reject_it_and_the_federation_goes_on(tmp_path):
    """``json.loads`` of a deeply nested array raises RecursionError (not a JSONDecodeError): one client must
    not stop the ServerApp."""
    def incoming(reply) -> None:
        record = _record(reply)
        if reply.metadata.src_node_id == 10 and "events" in record:
            record["events"] = "[" * 200_000

    job = FlowerJob(_config(*DP_SGD), tmp_path / "out")
    server_app.run(TamperingGrid(job, incoming=incoming), job)
    rounds = _rounds(job)
    assert [r["status"] for r in rounds] == ["ok"]
    assert [r["rejected"] for r in rounds] == [[0]]
    assert PrivacyLedger.load(job.out / "ledger.json").epsilon(0) > 0  # it trained: charged all the same


@pytest.mark.parametrize("settings", [
    "[" * 200_000,  # RecursionError in json.loads
    '{"clip": 1' + "0" * 400 + "}",  # an int too large for a float: OverflowError in math.isfinite
], ids=["deep", "huge-int"])
def test_malformed_round_settings_are_a_typed_refusal(tmp_path, settings):
    def outgoing(message) -> None:
        if message.metadata.message_type == "query.train":
            _record(message)["settings"] = settings

    privacy = dict(noise_multiplier=0.3, adaptive_quantile=0.5, clip=0.5)
    job = FlowerJob(_config(DPMode.CENTRAL, SecureMode.NONE, privacy), tmp_path / "out")
    server_app.run(TamperingGrid(job, outgoing=outgoing), job)  # an untyped exception escapes the handler
    rounds = _rounds(job)
    assert [r["status"] for r in rounds] == ["aborted"]
    assert all(c["status"] == "rejected" for c in rounds[0]["per_client"])


# --- a node that was never enrolled -------------------------------------------------------------------------

@pytest.mark.parametrize("dp, secure, privacy", [DP_SGD, DISTRIBUTED], ids=["dpsgd", "distributed-mask"])
def test_a_train_before_any_enrolment_is_a_typed_refusal(tmp_path, dp, secure, privacy):
    """A server that skips the enrolment (no noise multiplier pinned): the node must refuse, typed, not
    train with a noise multiplier it never checked."""
    job = FlowerJob(_config(dp, secure, privacy), tmp_path / "out")
    grid = Recording(job)
    server_app.run(grid, job)
    fresh = grid.contexts[10].__class__(run_id=2, node_id=10, node_config=grid.contexts[10].node_config,
                                        state=type(grid.contexts[10].state)(),
                                        run_config=grid.contexts[10].run_config)
    grid.contexts[10] = fresh
    answer = grid.again(10, 1)
    assert "error" in answer and "upload" not in answer, sorted(answer)


# --- the server's account: a release that arrived is charged, whatever else the answer lacks --------------

@pytest.mark.parametrize("drop", ["examples", "train_seconds", "protocol_seconds"])
def test_an_upload_that_arrived_is_charged_even_if_the_answer_is_malformed(tmp_path, drop):
    """Without secure aggregation the server holds client 0's DP-SGD update as soon as its answer arrives; an
    answer that lacks another field rejects the client, but the release happened: it must be charged."""
    def incoming(reply) -> None:
        record = _record(reply)
        if reply.metadata.src_node_id == 10 and "upload" in record:
            del record[drop]

    job = FlowerJob(_config(DPMode.LOCAL, SecureMode.NONE, dict(noise_multiplier=0.8)), tmp_path / "out")
    server_app.run(TamperingGrid(job, incoming=incoming), job)
    rounds = _rounds(job)
    assert [r["rejected"] for r in rounds] == [[0]]
    ledger = PrivacyLedger.load(job.out / "ledger.json")
    assert 0 in ledger.parties() and ledger.epsilon(0) > 0


class FlowerErrors(TamperingGrid):
    """As Flower answers for a ClientApp that raised: an error message in place of content. ``raising``: the
    nodes whose train handler raises (a bug reached by crafted input, or a client that answers so on purpose)."""

    def __init__(self, job: FlowerJob, raising: set[int]) -> None:
        super().__init__(job)
        self.raising = raising

    def push_messages(self, messages):
        from flwr.app import Error

        plain = []
        for message in messages:
            node = message.metadata.dst_node_id
            if message.metadata.message_type == "query.train" and node in self.raising:
                message.metadata.__dict__["_message_id"] = f"e{len(self.replies)}"
                self.replies[message.metadata.message_id] = Message(Error(code=0, reason="RuntimeError: boom"),
                                                                     reply_to=message)
            else:
                plain.append(message)
        return [*super().push_messages(plain), *[i for i in self.replies if i.startswith("e")]]


@pytest.mark.parametrize("secure", [SecureMode.NONE, SecureMode.MASK])
def test_a_node_answering_with_a_flower_error_is_rejected_and_the_federation_goes_on(tmp_path, secure):
    """``has_field`` read the content of an error message (Flower raises ValueError for it), before ``field``
    could turn the error into a MessageError: one node whose ClientApp raised stopped the ServerApp."""
    job = FlowerJob(ExperimentConfig(clients=5, rounds=1, local_epochs=1, hidden=8, batch_size=128,
                                     secure=secure, seed=2), tmp_path / "out")
    server_app.run(FlowerErrors(job, raising={10}), job)
    rounds = _rounds(job)
    assert [r["status"] for r in rounds] == ["ok"]
    assert rounds[0]["rejected"] == [0] and rounds[0]["survivors"] == 4


# --- a client that lies at the greeting ---------------------------------------------------------------------

@pytest.mark.xfail(strict=True, reason="the weight bound is the largest example count any client reports: one "
                   "client claiming 2^40 makes every honest client's weight encode to 0 (alpha * 2^20 levels), so "
                   "every round aborts ('aggregate weight word 0'); fix: bound what a client may report (a run "
                   "setting such as --max-examples, checked at the greeting), refusing that node, not the run")
def test_one_client_claiming_a_huge_example_count_does_not_stop_the_federation(tmp_path):
    def incoming(reply) -> None:
        record = _record(reply)
        if reply.metadata.src_node_id == 10 and "examples" in record and "identity" in record:  # the greeting
            record["examples"] = 2 ** 40

    config = ExperimentConfig(clients=4, rounds=1, local_epochs=1, hidden=8, batch_size=128,
                              secure=SecureMode.MASK, seed=2)
    job = FlowerJob(config, tmp_path / "out", app="federation.flower.app_template")  # the user's own data
    server_app.run(TamperingGrid(job, incoming=incoming), job)
    assert [r["status"] for r in _rounds(job)] == ["ok"]


# --- a resume that replays rounds: a new Flower run, a fresh node state -------------------------------------

@pytest.mark.xfail(strict=True, reason="a node's record of the rounds it trained (and so its budget) lives in the "
                   "Flower run's context.state: a server that starts the same job again (as --resume does, or "
                   "any number of times) gets every round trained again, each time within 'this run's' target. "
                   "Fix: a node-local privacy ledger outside the run (a node-config path, keyed by the job's "
                   "settings and data), charged before each train and checked against the node's own target")
def test_the_same_job_run_again_on_the_same_nodes_is_refused_once_their_budget_is_spent(tmp_path):
    job = FlowerJob(_config(*DP_SGD), tmp_path / "first")
    first = Recording(job)
    server_app.run(first, job)
    again = FlowerJob(_config(*DP_SGD), tmp_path / "again")
    second = Recording(again)
    for node, ctx in second.contexts.items():  # the same SuperNodes (node ids, node config, data), a new run
        second.contexts[node] = type(ctx)(run_id=2, node_id=node, node_config=first.contexts[node].node_config,
                                          state=type(ctx.state)(), run_config=ctx.run_config)
    from federation.errors import ConfigError

    with pytest.raises(ConfigError):  # the nodes spent their target epsilon in the first run
        server_app.run(second, again)


# --- a node whose data changed between the check and the training -------------------------------------------

def test_a_dp_sgd_node_whose_batches_changed_since_its_check_does_not_train(tmp_path, monkeypatch):
    """Per message, the node's client is rebuilt (its data loaded again): with fewer batches at train than
    at the enrolment, it would sample at a higher rate than the epsilon it checked the noise against, and the
    server charges the planned (smaller) events. It must refuse, typed."""
    from torch.utils.data import DataLoader

    from federation.flower.userapp import node_client

    builds: dict[int, int] = {}

    def shrinking(job, index):
        client = node_client(job, index)
        builds[index] = builds.get(index, 0) + 1
        if index == 0 and builds[index] > 2:  # hello and enrol saw 4 batches; train sees 2 (a higher rate)
            client.loader = DataLoader(client.loader.dataset, batch_size=client.loader.batch_size * 2)
        return client

    monkeypatch.setattr(client_app, "node_client", shrinking)
    job = FlowerJob(ExperimentConfig(clients=2, rounds=1, local_epochs=1, hidden=8, batch_size=128, seed=2,
                                     dp=DPMode.LOCAL, privacy=PrivacySettings(target_epsilon=8.0)), tmp_path / "out")
    server_app.run(TamperingGrid(job), job)
    rounds = _rounds(job)
    assert rounds[0]["rejected"] == [0]
    reason = rounds[0]["per_client"][0]["reason"]
    assert "peer refused" in reason and "batches" in reason, reason


# --- checked and found fine: a stage message replayed after the round --------------------------------------

@pytest.mark.parametrize("process", ["per-message", "long-lived"])
def test_a_replayed_stage_message_gets_no_second_answer(tmp_path, process, request):
    """Replaying a masking stage (say the unmasking one, with another survivor list) must never get a second
    answer: the finished session refuses it, and a node without a session answers that it has none."""
    if process == "long-lived":
        request.getfixturevalue("long_lived")
    stages: list[dict] = []

    def outgoing(message) -> None:
        if message.metadata.message_type == "query.stage" and message.metadata.dst_node_id == 10:
            stages.append(dict(_record(message)))

    job = FlowerJob(ExperimentConfig(clients=5, rounds=1, local_epochs=1, hidden=8, batch_size=128,
                                     secure=SecureMode.MASK, seed=2), tmp_path / "out")
    grid = TamperingGrid(job, outgoing=outgoing)
    server_app.run(grid, job)
    assert len(stages) >= 2
    from federation.flower.codec import payload

    for content in stages:
        message = Message(payload(**content), dst_node_id=10, message_type="query.stage", group_id="1")
        message.metadata.__dict__["_message_id"] = "replayed-stage"
        answer = _answer(client_app.stage(message, grid.contexts[10]))
        assert "upload" not in answer and ("error" in answer or "lost" in answer), sorted(answer)
