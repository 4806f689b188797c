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

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("flwr")

from flwr.app import Message  # noqa: E402

from federation.experiment import SecureMode, build_federation  # noqa: E402
from federation.flower import server_app  # noqa: E402
from federation.flower.job import FlowerJob  # noqa: E402
from tests.federation.flower.dropout_harness import (TIMEOUT, Case, HalfUploadedGrid, RefusesRound,  # noqa: E402
                                                     RestartedExecutorGrid, SilentNodesGrid, assert_same_outcome,
                                                     base, outcome)
from tests.federation.flower.test_apps_in_process import flower_messages, long_lived  # noqa: E402,F401


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The Flower side trains in this process without the in-process runtime's thread policy; one thread each
    way, as the nodes of a local deployment run (a loaded two-core machine slows torch's thread pool badly)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def test_a_round_the_server_session_refuses_aborts_before_any_node_trains(tmp_path, monkeypatch):
    """In-process a round whose server session cannot be made ends before anyone trains (nothing is spent on
    it, no training time, no privacy budget); on Flower too: no training message is sent."""
    from federation import protection

    config = base(SecureMode.MASK)
    federation = build_federation(config)
    federation.aggregator = RefusesRound(federation.aggregator, 1)
    expected = [r.to_dict() for r in federation.run()]
    made = protection.protection_aggregator
    monkeypatch.setattr(protection, "protection_aggregator", lambda *a, **k: RefusesRound(made(*a, **k), 1))
    job = FlowerJob(config, tmp_path / "out", stage_timeout=TIMEOUT)
    grid = SilentNodesGrid(job, {})
    server_app.run(grid, job)
    rounds = json.loads((tmp_path / "out" / "results.json").read_text())["rounds"]
    assert [outcome(r) for r in rounds] == [outcome(r) for r in expected]
    assert rounds[0]["abort_reason"] == "ConfigurationError: round 1 refused"
    assert all(c["train_seconds"] == 0 for c in rounds[0]["per_client"])
    assert {r for r, _node in grid.stage} == {2}  # no node was asked to train in round 1


@pytest.mark.parametrize("secure, stage", LIVE_DROPS, ids=[f"{m.value}-stage{s}" for m, s in LIVE_DROPS])
def test_a_restarted_executor_that_lost_the_session_is_the_in_process_dropout(tmp_path, long_lived, secure,
                                                                              stage):
    """The new process cannot go on with the round (the session's secrets were only in memory): the node says
    so and the server counts it as dropped before that stage, as in-process, not as a refusal."""
    rounds = assert_same_outcome(Case(base(secure), {1: {2: stage}}), tmp_path / "out", RestartedExecutorGrid)
    assert rounds[0]["dropped"] == [2] and rounds[1]["survivors"] == 4  # the client rebuilt, next round


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


def test_a_node_that_dies_while_uploading_its_answer_is_the_in_process_dropout(tmp_path):
    """Flower's pull of the half-uploaded answer outlasts the stage timeout; the other nodes answered in time
    and are not counted as silent (they were, and the round aborted, in a run that killed a node at masking's
    stage 2 just as it answered)."""
    case = Case(base(SecureMode.MASK, rounds=1), {1: {3: 2}})
    rounds = assert_same_outcome(case, tmp_path / "out", HalfUploadedGrid, block=3 * TIMEOUT)
    assert rounds[0]["status"] == "ok" and rounds[0]["dropped"] == [3]


def test_the_server_gives_up_on_an_answer_s_content_after_a_stage_timeout():
    from types import SimpleNamespace

    from federation.flower.polling import OBJECT_RETRY_CAP, OBJECT_RETRY_FIRST, shorten_object_retries

    module = SimpleNamespace(pull_objects=lambda **kw: kw)
    assert shorten_object_retries(module, "pull_objects", max_time=7.5)
    assert module.pull_objects() == {"initial_backoff": OBJECT_RETRY_FIRST, "backoff_cap": OBJECT_RETRY_CAP,
                                     "max_time": 7.5}
