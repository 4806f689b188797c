"""Our Flower payloads: round contexts and identity directories round-trip; malformed ones are refused."""

import pytest

pytest.importorskip("flwr")

from flwr.app import Message  # noqa: E402

from federation.flower.codec import (decode_context, decode_directory, encode_context, encode_directory,  # noqa: E402
                                     field, payload)
from secagg.aggregation import RoundContext  # noqa: E402
from secagg.errors import MessageError  # noqa: E402


def test_context_and_directory_round_trip():
    ctx = RoundContext.new(7, (0, 2, 5), 123, 2)
    assert decode_context(encode_context(ctx)) == ctx
    directory = {0: b"a" * 32, 5: b"b" * 32}
    assert decode_directory(encode_directory(directory)) == directory


def test_malformed_payloads_are_refused():
    with pytest.raises(MessageError):
        decode_context(encode_context(RoundContext.new(1, (0, 1), 4))[:-1])
    with pytest.raises(MessageError):
        decode_directory(encode_directory({0: b"a" * 32}) + b"\0")


def test_fields_are_typed_and_refusals_surface(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_node_id", "_task_id"):  # a Message outside a Flower process needs an identity
        monkeypatch.setattr(TaskIdentity, name, 1, raising=False)
    message = Message(payload(upload=b"x", seed=3), dst_node_id=1, message_type="query.train")
    assert field(message, "upload", bytes) == b"x" and field(message, "seed", int) == 3
    with pytest.raises(MessageError, match="lacks"):
        field(message, "seed", bytes)
    refused = Message(payload(error="ProtocolError: no"), dst_node_id=1, message_type="query.train")
    with pytest.raises(MessageError, match="refused"):
        field(refused, "upload", bytes)


def test_job_timeouts_must_be_positive(tmp_path):
    from federation.errors import ConfigError
    from federation.experiment import ExperimentConfig
    from federation.flower.job import FlowerJob

    with pytest.raises(ConfigError, match="stage timeout"):
        FlowerJob(ExperimentConfig(), tmp_path, stage_timeout=0)
