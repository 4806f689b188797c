"""A masking client suspended to bytes after every message and resumed from them behaves as if it never stopped."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg.errors import MessageError, ProtocolError
from secagg.masking import MaskingAggregator, MaskingConfig
from secagg.masking.client import MaskingClient

from tests.secagg.driver import run_round


class Resumed:
    """A client session that exists only as its suspended bytes between messages."""

    def __init__(self, aggregator, session):
        self.agg, self.state = aggregator, session.suspend()
        self.args = (session.ctx, session.id, session.config, session.encoder, session.identity, session.directory)

    def _call(self, method, *message):
        session = MaskingClient.resume(self.state, *self.args)
        out = getattr(session, method)(*message)
        self.state = session.suspend()
        return out

    def start(self):
        return self._call("start")

    def handle(self, message):
        return self._call("handle", message)


class SuspendingAggregator(MaskingAggregator):
    def __init__(self, config):
        super().__init__(config)
        self.plain = {}

    def client_session(self, ctx, client_id, update, weight):
        session = super().client_session(ctx, client_id, update, weight)
        self.plain[client_id] = session._encoded.copy()
        return Resumed(self, session)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(4, 9), st.booleans(), st.data())
def test_resumed_sessions_give_the_exact_sum(n, consistency, data):
    config = MaskingConfig(neighbors=0, consistency_check=consistency)
    after_input = 4 if consistency else 3  # drops after the masked input keep every contribution
    drops = data.draw(st.dictionaries(st.integers(0, n - 1), st.integers(after_input, config.stages - 1), max_size=1))
    agg = SuspendingAggregator(config)
    rng = np.random.default_rng(n)
    updates = {c: rng.uniform(-1, 1, 8).astype(np.float32) for c in range(n)}
    _, result = run_round(agg, updates, drop_stage=drops)
    assert set(result.contributors) == set(range(n))
    np.testing.assert_allclose(result.mean, np.mean([updates[c] for c in range(n)], axis=0), atol=1e-4)


def test_truncated_or_unknown_state_is_refused():
    agg = MaskingAggregator(MaskingConfig())
    from secagg.aggregation import RoundContext

    ctx = RoundContext.new(1, (0, 1, 2), 4)
    session = agg.client_session(ctx, 0, np.zeros(4, np.float32), 1.0)
    args = (ctx, 0, agg.config, agg.encoder(ctx), None, {})
    state = session.suspend()
    with pytest.raises(MessageError):
        MaskingClient.resume(state[:-3], *args)
    with pytest.raises(ProtocolError):
        MaskingClient.resume(b"\x09" + state[1:], *args)
