"""Hide individual client updates from the server; release only their aggregate."""

from secagg.aggregation import AggregateResult, Aggregator, ClientSession, RoundContext, ServerSession
from secagg.errors import (
    AggregationAborted,
    ConfigurationError,
    MessageError,
    ProtocolError,
    SecAggError,
    UpdateRejected,
)
from secagg.plaintext import PlaintextAggregator

__all__ = [
    "AggregateResult",
    "AggregationAborted",
    "Aggregator",
    "ClientSession",
    "ConfigurationError",
    "MessageError",
    "PlaintextAggregator",
    "ProtocolError",
    "RoundContext",
    "SecAggError",
    "ServerSession",
    "UpdateRejected",
]
