"""The Flower runtime: the round loop's messages travel through a Flower Grid to ClientApps on SuperNodes.

It drives the same server sessions as the in-process runtime (:func:`federation.runtime.drive_stages`);
only the carrying differs. A client whose answer does not arrive within the stage timeout (its SuperNode
died, its link broke) has dropped out, and so has one that answers that it lost the round's session (its
ClientApp process restarted mid-round); one that answers with an error is rejected. Byte counts are those of
our protocol messages, the same as in-process; Flower's own framing is not counted.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from flwr.app import Message
from flwr.serverapp import Grid

from federation.flower.codec import encode_context, field, has_field, json_field, lost, payload
from federation.flower.polling import Backoff
from federation.messages import encode_broadcast
from federation.runtime import (ClientReport, RoundOutcome, abort, drive_stages, mark_dropped, mark_rejected,
                                record_training)
from secagg.aggregation import Aggregator, RoundContext
from secagg.errors import MessageError

log = logging.getLogger(__name__)


def exchange(grid: Grid, messages: Mapping[int, Message], timeout: float) -> dict[int, Message]:
    """Send one message per node and return the answers (by node id) that arrive within ``timeout``.

    The answers are pulled every 10 ms at first, then less often (a tenth of the wait so far, at most every
    250 ms), not every 3 s as ``Grid.send_and_receive`` does: a stage ends soon after its last answer. One pull
    may outlast the deadline (Flower waits for the content of an answer whose sender died while uploading it,
    then returns an error from the server's own node in its place): the answers that arrived meanwhile are
    pulled once more, not counted as silent."""
    sent = {m.metadata.dst_node_id for m in messages.values()}
    answers: dict[int, Message] = {}
    waiting = set(grid.push_messages(list(messages.values())))
    deadline, poll = time.monotonic() + timeout, Backoff(0.01, 0.25, share=0.1)
    last = False
    while waiting:
        for reply in grid.pull_messages(waiting):
            waiting.discard(reply.metadata.reply_to_message_id)
            node = reply.metadata.src_node_id
            if node in sent and node not in answers:
                answers[node] = reply
        if not waiting or last:
            break
        if time.monotonic() >= deadline:
            last = True  # one more pull: what arrived while the last one ran (or as the deadline passed)
            continue
        poll.wait(limit=deadline - time.monotonic())
    return answers


def check_events(reply: Message, planned: tuple) -> None:
    """The privacy events a client says its training spent must be those the server accounts for it: a client
    that trained otherwise (other batches, other noise) is refused (:class:`MessageError`); it is charged the
    planned events all the same."""
    said = json_field(reply, "events")
    expected = [event.describe() for event in planned]
    if said != expected:
        raise MessageError(f"the client reports privacy events {said}, the server accounts {expected}")


class FlowerRuntime:
    """Reaches client ``c`` at SuperNode ``clients[c].address`` (a :class:`~federation.client.RemoteClient`);
    writes each stage it starts, and the end of each round's exchanges (stage ``"end"``), to ``progress``."""

    def __init__(self, grid: Grid, stage_timeout: float, progress: Path | None = None) -> None:
        self.grid, self.stage_timeout, self.progress = grid, stage_timeout, progress

    def run_round(self, ctx: RoundContext, params: np.ndarray, clients: Mapping[int, Any],
                  seeds: Mapping[int, int], drop_stage: Mapping[int, int], aggregator: Aggregator) -> RoundOutcome:
        if drop_stage:
            raise MessageError("the Flower runtime has real dropouts only")
        reports = {c: ClientReport(c) for c in ctx.clients}
        started = time.perf_counter()
        try:
            server = aggregator.server_session(ctx)
        except Exception as err:  # as in-process: before anyone trains, so nothing is spent on the round
            self._mark(ctx.round, "end")
            return RoundOutcome(None, abort(ctx, err), reports, time.perf_counter() - started)
        broadcast, ctx_bytes = encode_broadcast(ctx, params), encode_context(ctx)
        server_seconds = time.perf_counter() - started
        self._mark(ctx.round, 0)
        extra: dict[str, bytes | int | str] = {}
        settings = getattr(aggregator, "round_settings", dict)()  # what changes per round (an adapted clip)
        if settings:
            extra["settings"] = json.dumps(settings)
        train = {c: self._message(clients[c].address, ctx.round, "train", ctx=ctx_bytes, broadcast=broadcast,
                                  seed=seeds[c], **extra)
                 for c in ctx.clients}
        for c in ctx.clients:
            reports[c].bytes_down += len(broadcast)
        uploads = {}
        for c, reply in self._send(train, clients, reports, 0).items():
            # the server's account of the client's local training (DP-SGD), charged once its upload arrived
            planned = tuple(clients[c].planned_events())
            if has_field(reply, "upload"):  # the release reached the server: charged, whatever else is wrong
                reports[c].events = planned
            try:
                loss = field(reply, "loss", float) if has_field(reply, "loss") else None
                record_training(reports[c], field(reply, "examples", int), loss, field(reply, "train_seconds", float),
                                reports[c].events)
                reports[c].protocol_seconds += field(reply, "protocol_seconds", float)
                check_events(reply, planned)
                uploads[c] = field(reply, "upload", bytes)
            except MessageError as err:
                mark_rejected(reports[c], err)

        def next_stage(stage: int, outgoing: dict[int, bytes]) -> dict[int, bytes]:
            self._mark(ctx.round, stage)
            sent = {c: self._message(clients[c].address, ctx.round, "stage", message=m) for c, m in outgoing.items()}
            answers = {}
            for c, reply in self._send(sent, clients, reports, stage).items():
                try:
                    reports[c].protocol_seconds += field(reply, "protocol_seconds", float)
                    answers[c] = field(reply, "upload", bytes)
                except MessageError as err:
                    mark_rejected(reports[c], err)
            return answers

        result, reason, seconds = drive_stages(ctx, server, uploads, reports, next_stage)
        self._mark(ctx.round, "end")
        return RoundOutcome(result, reason, reports, server_seconds + seconds, list(result.events) if result else [])

    def _message(self, node: int, round_index: int, action: str, **fields: bytes | int) -> Message:
        return Message(payload(**fields), dst_node_id=node, message_type=f"query.{action}", group_id=str(round_index))

    def _send(self, messages: dict[int, Message], clients: Mapping[int, Any], reports: dict[int, ClientReport],
              stage: int) -> dict[int, Message]:
        """Answers by client id; silent clients, and those that lost their session, are marked dropped before
        ``stage``."""
        by_node = exchange(self.grid, messages, self.stage_timeout)
        answers = {}
        for c in messages:
            reply = by_node.get(clients[c].address)
            why = "gave no answer" if reply is None else lost(reply)
            if why is not None:
                mark_dropped(reports[c], stage)
                log.warning("client %d at stage %d: %s; dropped", c, stage, why)
            else:
                answers[c] = reply
        return answers

    def _mark(self, round_index: int, stage: int | str) -> None:
        if self.progress is not None:
            with self.progress.open("a") as f:
                f.write(json.dumps({"round": round_index, "stage": stage, "time": time.time()}) + "\n")
