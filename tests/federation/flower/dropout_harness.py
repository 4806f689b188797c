"""The harness of the dropout tests: the same configuration run in-process with planned ``drop_stage`` and on
Flower (ServerApp and ClientApps in this process, through ``InProcessGrid``) with nodes that fall silent, lose
their session or die mid-upload at the same stages; and what of the two records must agree."""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message, Metadata
from flwr.app.error import Error
from flwr.app.message import make_message
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.constant import SYSTEM_MESSAGE_TYPE

from federation.experiment import ExperimentConfig, SecureMode, build_federation
from federation.flower import client_app, server_app
from federation.flower.job import FlowerJob
from federation.flower.live import LIVE
from federation.params import get_vector
from federation.runtime import InProcessRuntime, RoundOutcome
from secagg.aggregation import Aggregator, RoundContext
from secagg.ckks.request import DecryptionRequest, Release
from secagg.errors import ConfigurationError, DecryptionRefused
from secagg.masking import MaskingConfig
from tests.federation.flower.test_apps_in_process import InProcessGrid, _nodes

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


def on_flower(case: Case, out: Path, grid: type[SilentNodesGrid] | None = None,
              **grid_options) -> tuple[list[dict], np.ndarray]:
    """Flower's records and final parameters: through a :class:`SilentNodesGrid` of ``case`` (or ``grid``,
    made with ``case.plan`` and ``grid_options``)."""
    job = FlowerJob(case.config, out, stage_timeout=TIMEOUT)
    nodes = SilentNodesGrid(job, case.plan, case.key_holder_silent) if grid is None else grid(job, case.plan,
                                                                                              **grid_options)
    server_app.run(nodes, job)
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


def assert_same_outcome(case: Case, out: Path, grid: type[SilentNodesGrid] | None = None,
                        **grid_options) -> list[dict]:
    """Run ``case`` in-process and on Flower; the records of both must agree. Returns Flower's records."""
    expected, expected_params = in_process(case)
    rounds, params = on_flower(case, out, grid, **grid_options)
    assert [outcome(r) for r in rounds] == [outcome(r) for r in expected]
    assert [r["accuracy"] for r in rounds] == pytest.approx([r["accuracy"] for r in expected], abs=0.01)
    np.testing.assert_allclose(params, expected_params, rtol=0, atol=ROUNDING[case.config.secure])
    return rounds
