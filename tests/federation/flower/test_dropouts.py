"""Real dropouts on Flower end as the in-process run's simulated ones.

A node that stops answering from stage ``s`` of a round on (its SuperNode died, its link broke) is waited
out by the Flower runtime and marked dropped before stage ``s``; in-process the same client gets
``drop_stage = s``. For every protection mode and every stage a client can drop at (and the CKKS key holder
silent at its decryption), both runs of the same configuration must end the same: status, clients, dropped,
rejected, survivors, each client's reason, the abort reason, and final parameters equal up to the mode's
rounding. The ServerApp and ClientApps run in this process (``InProcessGrid``); the real processes are in
test_dropouts_processes.py.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("flwr")

from flwr.app import Message, Metadata  # noqa: E402
from flwr.app.error import Error  # noqa: E402
from flwr.app.message import make_message  # noqa: E402
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode  # noqa: E402
from flwr.supercore.constant import SYSTEM_MESSAGE_TYPE  # noqa: E402

from federation.experiment import ExperimentConfig, SecureMode, build_federation  # noqa: E402
from federation.flower import client_app, server_app  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from federation.params import get_vector  # noqa: E402
from federation.flower.live import LIVE  # noqa: E402
from federation.runtime import InProcessRuntime, RoundOutcome  # noqa: E402
from secagg.aggregation import Aggregator, RoundContext  # noqa: E402
from secagg.ckks.request import DecryptionRequest, Release  # noqa: E402
from secagg.errors import ConfigurationError, DecryptionRefused  # noqa: E402
from secagg.masking import MaskingConfig  # noqa: E402
from tests.federation.flower.test_apps_in_process import (InProcessGrid, _nodes, flower_messages,  # noqa: E402,F401
                                                          long_lived)

Plan = dict[int, dict[int, int]]  # round -> client -> the stage it falls silent at
NODE_OFFSET = 10  # InProcessGrid's node id of client c is c + 10
TIMEOUT = 0.1  # seconds the Flower runtime waits for a stage's answers: a silent node is waited out


class PlannedDropouts(InProcessRuntime):
    """The in-process runtime with ``drop_stage`` taken from ``plan`` (round -> client -> stage)."""

    def __init__(self, plan: Plan) -> None:
        super().__init__()
        self.plan = plan

    def run_round(self, ctx: RoundContext, params: np.ndarray, clients, seeds, drop_stage,
                  aggregator: Aggregator) -> RoundOutcome:
        return super().run_round(ctx, params, clients, seeds, {**drop_stage, **self.plan.get(ctx.round, {})},
                                 aggregator)


class SilentNodesGrid(InProcessGrid):
    """Client ``c``'s node answers nothing from stage ``plan[r][c]`` of round ``r`` on (stage 0: the training
    message; stage k: the k-th ``stage`` message of the round); the CKKS key holder answers no decryption
    request in rounds ``key_holder_silent``. A message that goes unanswered gets an id no reply ever has."""

    def __init__(self, job: FlowerJob, plan: Plan, key_holder_silent: frozenset[int] = frozenset()) -> None:
        super().__init__(job, _nodes(job.config.clients, job.config.secure))
        self.plan, self.key_holder_silent = plan, key_holder_silent
        self.stage: dict[tuple[int, int], int] = defaultdict(int)
        self.ids = itertools.count()

    def _answered(self, message: Message) -> bool:
        kind, node = message.metadata.message_type, message.metadata.dst_node_id
        if kind == "query.decrypt":
            return int(message.metadata.group_id) not in self.key_holder_silent
        if kind not in ("query.train", "query.stage"):
            return True
        round_index = int(message.metadata.group_id)
        key = (round_index, node)
        self.stage[key] = 0 if kind == "query.train" else self.stage[key] + 1
        silent_from = self.plan.get(round_index, {}).get(node - NODE_OFFSET)
        return silent_from is None or self.stage[key] < silent_from

    def push_messages(self, messages: list[Message]) -> list[str]:
        """Answer each message at once, unless its node is silent by then; every message gets a fresh id."""
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = ident = f"m{next(self.ids)}"  # as Flower sets it
            if self._answered(message):
                handler = getattr(client_app, message.metadata.message_type.split(".", 1)[1])
                self.replies[ident] = handler(message, self.contexts[message.metadata.dst_node_id])
            ids.append(ident)
        return ids


class SilentKeyHolder:
    """The in-process twin of a key holder that does not answer: the refusal the Flower server's proxy raises."""

    def decrypt(self, request: DecryptionRequest) -> Release:
        raise DecryptionRefused("the key holder did not answer")


@dataclass(frozen=True)
class Case:
    config: ExperimentConfig
    plan: Plan
    key_holder_silent: frozenset[int] = frozenset()


def in_process(case: Case) -> tuple[list[dict], np.ndarray]:
    federation = build_federation(case.config)
    federation.runtime = PlannedDropouts(case.plan)
    if case.key_holder_silent:
        inner = federation.aggregator
        real = inner.key_holder

        class Sometimes:
            def decrypt(self, request: DecryptionRequest) -> Release:
                return (SilentKeyHolder() if request.round in case.key_holder_silent else real).decrypt(request)

        inner.key_holder = Sometimes()
    history = federation.run()
    return [r.to_dict() for r in history], get_vector(federation.model)


def on_flower(case: Case, out: Path) -> tuple[list[dict], np.ndarray]:
    job = FlowerJob(case.config, out, stage_timeout=TIMEOUT)
    server_app.run(SilentNodesGrid(job, case.plan, case.key_holder_silent), job)
    rounds = json.loads((out / "results.json").read_text())["rounds"]
    with np.load(out / "checkpoint.npz", allow_pickle=False) as ckpt:
        return rounds, ckpt["params"]


def outcome(record: dict) -> dict:
    """What must agree: everything but measurements (times, and bytes a dropped client did not send)."""
    keys = ("round", "status", "clients", "dropped", "rejected", "survivors", "abort_reason")
    return {**{k: record[k] for k in keys},
            "per_client": [(c["client"], c["status"], c["reason"]) for c in record["per_client"]]}


def base(secure: SecureMode, consistency_check: bool = False, rounds: int = 2) -> ExperimentConfig:
    """Four clients, two rounds (the silent node is back in the second), releases need two contributions."""
    return ExperimentConfig(clients=4, rounds=rounds, local_epochs=1, hidden=16, secure=secure, seed=5,
                            min_clients=2, masking=MaskingConfig(consistency_check=consistency_check))


# Parameters agree up to the mode's own rounding: none for plaintext (float64 sums of the same float32 deltas);
# masking's fixed point (2^-20 of the clip per step) and CKKS's release rounding, with stochastic rounding and
# fresh randomness in each run: observed differences are about 2e-6, the bound is ten times that.
ROUNDING = {SecureMode.NONE: 1e-6, SecureMode.MASK: 2e-5, SecureMode.CKKS: 2e-5}


def assert_same_outcome(case: Case, out: Path) -> list[dict]:
    """Run ``case`` in-process and on Flower; the records of both must agree. Returns Flower's records."""
    expected, expected_params = in_process(case)
    rounds, params = on_flower(case, out)
    assert [outcome(r) for r in rounds] == [outcome(r) for r in expected]
    assert [r["accuracy"] for r in rounds] == pytest.approx([r["accuracy"] for r in expected], abs=0.01)
    np.testing.assert_allclose(params, expected_params, rtol=0, atol=ROUNDING[case.config.secure])
    return rounds


# Every stage a client can fall silent at: plaintext has one, masking four (six with the consistency check:
# advertise, reveal, shares, input, signature, unmasking), CKKS two (upload, sketch).
SINGLE_DROPS = ([(SecureMode.NONE, False, 0)] + [(SecureMode.MASK, False, s) for s in range(4)]
                + [(SecureMode.MASK, True, s) for s in range(6)] + [(SecureMode.CKKS, False, s) for s in range(2)])


@pytest.mark.parametrize("secure, consistency_check, stage", SINGLE_DROPS,
                         ids=[f"{m.value}{'+check' if c else ''}-stage{s}" for m, c, s in SINGLE_DROPS])
def test_a_node_silent_from_a_stage_on_is_the_in_process_dropout_at_that_stage(tmp_path, secure,
                                                                                consistency_check, stage):
    """One round (the silent nodes of the other tests are back, and trained, in their second round)."""
    case = Case(base(secure, consistency_check, rounds=1), {1: {2: stage}})
    (record,) = assert_same_outcome(case, tmp_path / "out")
    assert record["dropped"] == [2] and record["per_client"][2]["reason"] == f"dropped before stage {stage}"


LIVE_DROPS = [(SecureMode.MASK, 2), (SecureMode.CKKS, 1)]


@pytest.mark.parametrize("secure, stage", LIVE_DROPS, ids=[f"{m.value}-stage{s}" for m, s in LIVE_DROPS])
def test_a_long_lived_clientapp_silent_from_a_stage_on_is_the_in_process_dropout(tmp_path, long_lived, secure,
                                                                                  stage):
    """The same with the node's session kept live in one process (federation.flower.executor): the session
    left open by the silent round is replaced at the next round's training."""
    case = Case(base(secure), {1: {2: stage}})
    rounds = assert_same_outcome(case, tmp_path / "out")
    assert rounds[0]["dropped"] == [2] and rounds[1]["status"] == "ok" and rounds[1]["survivors"] == 4


@pytest.mark.parametrize("secure, plan", [
    (SecureMode.NONE, {0: 0, 1: 0, 2: 0}),  # one upload left, two needed
    (SecureMode.MASK, {0: 0, 1: 0}),  # a key list must name a strict majority
    (SecureMode.MASK, {1: 2, 2: 2, 3: 2}),  # one masked input left
    (SecureMode.MASK, {0: 3, 1: 3, 2: 3}),  # too few unmasking shares to remove the masks
    (SecureMode.CKKS, {0: 0, 1: 1, 3: 1}),  # one sketch left: the key holder's policy wants two
], ids=["none-stage0", "mask-advertise", "mask-input", "mask-unmask", "ckks-sketch"])
def test_too_many_silent_nodes_abort_the_round_as_in_process(tmp_path, secure, plan):
    rounds = assert_same_outcome(Case(base(secure), {1: plan}), tmp_path / "out")
    assert [r["status"] for r in rounds] == ["aborted", "ok"]
    assert rounds[1]["survivors"] == 4  # the silent nodes answer again, and train, in the next round


def test_a_node_silent_at_the_repeated_ckks_challenge_is_dropped_there(tmp_path):
    """A dropout at the sketch makes the server challenge the others again (a third stage); one of them silent
    there is dropped before stage 2, and the round cannot end without its sketch."""
    rounds = assert_same_outcome(Case(base(SecureMode.CKKS, rounds=1), {1: {2: 1, 3: 2}}), tmp_path / "out")
    assert rounds[0]["status"] == "aborted" and rounds[0]["dropped"] == [2, 3]
    assert rounds[0]["per_client"][3]["reason"] == "dropped before stage 2"


def test_a_key_holder_silent_at_decryption_aborts_the_round_as_a_refusal_in_process(tmp_path):
    case = Case(base(SecureMode.CKKS), {}, key_holder_silent=frozenset({1}))
    rounds = assert_same_outcome(case, tmp_path / "out")
    assert [r["status"] for r in rounds] == ["aborted", "ok"]
    assert rounds[0]["abort_reason"] == "key holder refused: DecryptionRefused: the key holder did not answer"


class RefusesRound:
    """An aggregator whose server session refuses round ``refused`` (as masking refuses a round of fewer than
    two clients), otherwise ``inner``."""

    def __init__(self, inner: Aggregator, refused: int) -> None:
        self.inner, self.refused = inner, refused

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def server_session(self, ctx: RoundContext):
        if ctx.round == self.refused:
            raise ConfigurationError(f"round {ctx.round} refused")
        return self.inner.server_session(ctx)


def test_a_round_the_server_session_refuses_aborts_before_any_node_trains(tmp_path, monkeypatch):
    """In-process a round whose server session cannot be made ends before anyone trains (nothing is spent on
    it, no training time, no privacy budget); on Flower too: no training message is sent."""
    from federation import protection

    config = base(SecureMode.MASK)
    federation = build_federation(config)
    federation.aggregator = RefusesRound(federation.aggregator, 1)
    expected = [r.to_dict() for r in federation.run()]
    remote = protection.remote_aggregator
    monkeypatch.setattr(protection, "remote_aggregator", lambda *a, **k: RefusesRound(remote(*a, **k), 1))
    job = FlowerJob(config, tmp_path / "out", stage_timeout=TIMEOUT)
    grid = SilentNodesGrid(job, {})
    server_app.run(grid, job)
    rounds = json.loads((tmp_path / "out" / "results.json").read_text())["rounds"]
    assert [outcome(r) for r in rounds] == [outcome(r) for r in expected]
    assert rounds[0]["abort_reason"] == "ConfigurationError: round 1 refused"
    assert all(c["train_seconds"] == 0 for c in rounds[0]["per_client"])
    assert {r for r, _node in grid.stage} == {2}  # no node was asked to train in round 1


class RestartedExecutorGrid(SilentNodesGrid):
    """Long-lived ClientApps; client ``c``'s process restarts (its executor died and its SuperNode started a
    new one) just before the message of stage ``restart[r][c]`` of round ``r``: what it kept in memory, the
    client and the open session, is gone; what the node's context holds (keys, enrolment) is not."""

    def __init__(self, job: FlowerJob, restart: Plan) -> None:
        super().__init__(job, {})
        self.restart = restart

    def _answered(self, message: Message) -> bool:
        answered = super()._answered(message)
        node = message.metadata.dst_node_id
        key = (int(message.metadata.group_id) if message.metadata.group_id.isdigit() else 0, node)
        if self.restart.get(key[0], {}).get(node - NODE_OFFSET) == self.stage.get(key):
            cache = LIVE.run(self.contexts[node])
            cache.client = cache.session = cache.key_holder = None
        return answered


@pytest.mark.parametrize("secure, stage", LIVE_DROPS, ids=[f"{m.value}-stage{s}" for m, s in LIVE_DROPS])
def test_a_restarted_executor_that_lost_the_session_is_the_in_process_dropout(tmp_path, long_lived, secure,
                                                                              stage):
    """The new process cannot go on with the round (the session's secrets were only in memory): the node says
    so and the server counts it as dropped before that stage, as in-process, not as a refusal."""
    config = base(secure)
    expected, expected_params = in_process(Case(config, {1: {2: stage}}))
    job = FlowerJob(config, tmp_path / "out", stage_timeout=TIMEOUT)
    server_app.run(RestartedExecutorGrid(job, {1: {2: stage}}), job)
    rounds = json.loads((tmp_path / "out" / "results.json").read_text())["rounds"]
    with np.load(tmp_path / "out" / "checkpoint.npz", allow_pickle=False) as ckpt:
        params = ckpt["params"]
    assert [outcome(r) for r in rounds] == [outcome(r) for r in expected]
    np.testing.assert_allclose(params, expected_params, rtol=0, atol=ROUNDING[secure])


def test_only_a_lost_field_that_says_why_is_a_lost_session():
    from flwr.app import ConfigRecord, RecordDict

    from federation.flower.codec import RECORD, lost, payload

    def reply(content: RecordDict) -> Message:
        return Message(content, dst_node_id=1, message_type="query.stage")

    assert lost(reply(payload(lost="no session"))) == "no session"
    assert lost(reply(payload(upload=b"x"))) is None
    assert lost(reply(payload(lost=1))) is None  # then an answer without an upload: rejected
    assert lost(reply(RecordDict({"other": ConfigRecord({"lost": "x"})}))) is None
    assert RECORD == "secagg"


MODES = {"none": (SecureMode.NONE, False, 1), "mask": (SecureMode.MASK, False, 4),
         "mask+check": (SecureMode.MASK, True, 6), "ckks": (SecureMode.CKKS, False, 3)}  # CKKS: with the repeat


@st.composite
def schedules(draw) -> tuple[str, dict[int, int]]:
    """A mode, and for each of the four clients either no dropout or the stage it falls silent at."""
    mode = draw(st.sampled_from(sorted(MODES)))
    stages = MODES[mode][2]
    plan = draw(st.dictionaries(st.integers(0, 3), st.integers(0, stages - 1), max_size=4))
    return mode, plan


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schedules())
def test_any_schedule_of_silent_nodes_ends_as_in_process(schedule):
    mode, plan = schedule
    secure, consistency_check, _ = MODES[mode]
    with tempfile.TemporaryDirectory() as out:
        assert_same_outcome(Case(base(secure, consistency_check, rounds=1), {1: plan}), Path(out) / "out")


class HalfUploadedGrid(SilentNodesGrid):
    """Client ``c``'s node dies while it uploads its answer of stage ``plan[r][c]``: the SuperLink has the
    answer's announcement but never its content. Flower's pull then asks for that content until it gives up
    (``block`` seconds, past the stage timeout) and returns an error from the server's own node in its place;
    the other nodes' answers, which arrived meanwhile, come with the next pull."""

    def __init__(self, job: FlowerJob, plan: Plan, block: float) -> None:
        super().__init__(job, {})
        self.half_plan, self.block, self.half = plan, block, set[str]()

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = super().push_messages(messages)
        for message, ident in zip(messages, ids):
            node, group = message.metadata.dst_node_id, message.metadata.group_id
            if (message.metadata.message_type in ("query.train", "query.stage")
                    and self.half_plan.get(int(group), {}).get(node - NODE_OFFSET) == self.stage[(int(group), node)]):
                self.half.add(ident)
                self.replies.pop(ident)
        return ids

    def pull_messages(self, message_ids) -> list[Message]:
        broken = [i for i in message_ids if i in self.half]
        if not broken:
            return super().pull_messages(message_ids)
        time.sleep(self.block)
        self.half.difference_update(broken)
        return [make_message(  # as flwr.superlink.grid.http_grid makes it
            metadata=Metadata(run_id=1, message_id="", src_node_id=SUPERLINK_NODE_ID, dst_node_id=SUPERLINK_NODE_ID,
                              message_type=SYSTEM_MESSAGE_TYPE, group_id="", ttl=0, reply_to_message_id=ident,
                              created_at=time.time()),
            error=Error(code=ErrorCode.MESSAGE_UNAVAILABLE, reason="Reply message objects are unavailable."))
            for ident in broken]


def test_a_node_that_dies_while_uploading_its_answer_is_the_in_process_dropout(tmp_path):
    """Flower's pull of the half-uploaded answer outlasts the stage timeout; the other nodes answered in time
    and are not counted as silent (they were, and the round aborted, in a run that killed a node at masking's
    stage 2 just as it answered)."""
    config = base(SecureMode.MASK, rounds=1)
    expected, expected_params = in_process(Case(config, {1: {3: 2}}))
    job = FlowerJob(config, tmp_path / "out", stage_timeout=TIMEOUT)
    server_app.run(HalfUploadedGrid(job, {1: {3: 2}}, block=3 * TIMEOUT), job)
    rounds = json.loads((tmp_path / "out" / "results.json").read_text())["rounds"]
    with np.load(tmp_path / "out" / "checkpoint.npz", allow_pickle=False) as ckpt:
        params = ckpt["params"]
    assert [outcome(r) for r in rounds] == [outcome(r) for r in expected]
    assert rounds[0]["status"] == "ok" and rounds[0]["dropped"] == [3]
    np.testing.assert_allclose(params, expected_params, rtol=0, atol=ROUNDING[SecureMode.MASK])


def test_the_server_gives_up_on_an_answer_s_content_after_a_stage_timeout():
    from types import SimpleNamespace

    from federation.flower.polling import OBJECT_RETRY_CAP, OBJECT_RETRY_FIRST, shorten_object_retries

    module = SimpleNamespace(pull_objects=lambda **kw: kw)
    assert shorten_object_retries(module, "pull_objects", max_time=7.5)
    assert module.pull_objects() == {"initial_backoff": OBJECT_RETRY_FIRST, "backoff_cap": OBJECT_RETRY_CAP,
                                     "max_time": 7.5}
