import numpy as np
import pytest

from dp.adaptive import AdaptiveClipping
from dp.clipping import ClientLevelDP, ClientLevelDPAggregator, ClientLevelMode, clip_l2
from dp.errors import InvalidPrivacyParameter
from dp.events import DistributedDiscreteGaussianEvent, DistributedGaussianEvent, GaussianEvent
from secagg.aggregation import RoundContext
from secagg.errors import SecAggError
from secagg.masking import MaskingAggregator, MaskingConfig
from secagg.plaintext import PlaintextAggregator

from tests.secagg.driver import run_round


class Recording(PlaintextAggregator):
    """A fake inner aggregator that proves the wrapper delegated: it keeps what clients handed it."""

    def __init__(self):
        self.seen = {}

    def client_session(self, ctx, client_id, update, weight):
        self.seen[client_id] = (update.copy(), weight)
        return super().client_session(ctx, client_id, update, weight)


def test_clip_l2():
    x = np.array([3.0, 4.0], np.float32)
    np.testing.assert_allclose(clip_l2(x, 1.0), [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(clip_l2(x, 10.0), x)


def test_central_mode_clips_weighs_uniformly_and_noises_the_aggregate():
    inner = Recording()
    agg = ClientLevelDPAggregator(inner, ClientLevelDP(noise_multiplier=2.0, clip=0.5))
    updates = {c: np.full(20000, 10.0, np.float32) for c in range(4)}
    _, result = run_round(agg, updates, weights={c: 100.0 * (c + 1) for c in updates})
    for update, weight in inner.seen.values():
        assert np.linalg.norm(update) == pytest.approx(0.5, rel=1e-4) and weight == 1.0
    clipped = 0.5 / np.sqrt(20000)
    noise = result.mean - clipped
    assert abs(noise.mean()) < 0.01
    assert noise.std() == pytest.approx(2.0 * 0.5 / 4, rel=0.05)  # z C / k on the mean
    assert result.events == (GaussianEvent(2.0),)


def test_distributed_mode_noises_on_the_clients_and_accounts_for_survivors():
    inner = Recording()
    agg = ClientLevelDPAggregator(inner, ClientLevelDP(1.0, 1.0, ClientLevelMode.DISTRIBUTED, min_clients=4))
    updates = {c: np.zeros(20000, np.float32) for c in range(6)}
    _, result = run_round(agg, updates, drop_stage={5: 0})
    for update, _ in inner.seen.values():
        assert update.std() == pytest.approx(1.0 / 2, rel=0.05)  # z C / sqrt(min_clients)
    assert result.events == (DistributedGaussianEvent(1.0, 5, 4),)
    assert (result.mean * 5).std() == pytest.approx(np.sqrt(5) * 0.5, rel=0.05)


def test_settings_are_validated():
    with pytest.raises(InvalidPrivacyParameter):
        ClientLevelDP(0.0, 1.0)
    with pytest.raises(InvalidPrivacyParameter):
        ClientLevelDP(1.0, 0.0)


def test_distributed_mode_under_masking_puts_discrete_noise_on_the_ring():
    masking = MaskingAggregator(MaskingConfig(neighbors=0))
    agg = ClientLevelDPAggregator(masking, ClientLevelDP(1.0, 1.0, ClientLevelMode.DISTRIBUTED, min_clients=4))
    dim = 20000
    updates = {c: np.zeros(dim, np.float32) for c in range(6)}
    _, result = run_round(agg, updates, drop_stage={5: 0})
    assert result.contributors == (0, 1, 2, 3, 4)
    (event,) = result.events
    encoder = masking.encoder(RoundContext.new(1, tuple(range(6)), dim))
    sensitivity = encoder.l2_sensitivity(1.0)
    assert event == DistributedDiscreteGaussianEvent(1.0, 5, 4, sensitivity / 2, sensitivity, dim)
    assert event.effective_noise_multiplier == pytest.approx(np.sqrt(5 / 4))
    # the sum carries 5 shares of (z D / 2)^2, D = scale C plus the rounding slack, in units of the update
    expected = np.sqrt(5) * 0.5 * sensitivity / encoder.scale
    assert (result.mean.astype(np.float64) * 5).std() == pytest.approx(expected, rel=0.05)
    assert abs(result.mean.mean()) < 0.01


def test_distributed_mode_under_masking_never_releases_below_min_clients():
    agg = ClientLevelDPAggregator(MaskingAggregator(MaskingConfig(neighbors=0)),
                                  ClientLevelDP(1.0, 1.0, ClientLevelMode.DISTRIBUTED, min_clients=4))
    updates = {c: np.zeros(10, np.float32) for c in range(5)}
    for drop_stage in (0, 2):  # before advertising keys, and before sending the masked input
        with pytest.raises(SecAggError, match="at least 4|below"):
            run_round(agg, updates, drop_stage={3: drop_stage, 4: drop_stage})


def test_adaptive_clipping_moves_the_clip_to_the_target_quantile():
    adaptive = AdaptiveClipping(quantile=0.5, count_noise=0.5, learning_rate=0.2)
    agg = ClientLevelDPAggregator(PlaintextAggregator(), ClientLevelDP(0.5, 0.1, adaptive=adaptive))
    norms = np.arange(1, 21, dtype=np.float64)  # the median norm is 10.5
    updates = {c: np.array([n, 0.0, 0.0], np.float32) for c, n in enumerate(norms)}
    clips = []
    for _ in range(80):
        _, result = run_round(agg, updates)
        clips.append(agg.clip)
        assert result.mean.shape == (3,) and result.events == (GaussianEvent(0.5),)
    assert clips[0] < 0.2 and 7.0 < np.median(clips[-20:]) < 14.0
    # the update sum gets z_u = (z^-2 - (2 sigma_b)^-2)^-1/2 times the clip; the count gets the rest
    assert adaptive.update_noise_multiplier(0.5) == pytest.approx((4.0 - 1.0) ** -0.5)


def test_adaptive_clipping_needs_central_mode_and_count_noise_above_half_z():
    with pytest.raises(InvalidPrivacyParameter, match="central"):
        ClientLevelDP(1.0, 1.0, ClientLevelMode.DISTRIBUTED, adaptive=AdaptiveClipping())
    with pytest.raises(InvalidPrivacyParameter, match="exceed z / 2"):
        ClientLevelDP(2.0, 1.0, adaptive=AdaptiveClipping(count_noise=1.0))
    with pytest.raises(InvalidPrivacyParameter):
        AdaptiveClipping(quantile=1.0)


def test_a_client_takes_the_server_s_round_clip_only_where_the_clip_adapts():
    adaptive = ClientLevelDPAggregator(PlaintextAggregator(), ClientLevelDP(
        1.0, 0.5, adaptive=AdaptiveClipping(0.5, 1.0, 0.2)))
    assert adaptive.round_settings() == {"clip": 0.5}
    adaptive.apply_round_settings({"clip": 0.8})
    assert adaptive.clip == 0.8 and adaptive.round_settings() == {"clip": 0.8}
    for bad in ({"clip": 0.0}, {"clip": float("nan")}, {"clip": True}, {"clip": "1"}, {"noise": 1.0}):
        with pytest.raises(InvalidPrivacyParameter):
            adaptive.apply_round_settings(bad)
    assert adaptive.clip == 0.8
    fixed = ClientLevelDPAggregator(PlaintextAggregator(), ClientLevelDP(1.0, 0.5, ClientLevelMode.DISTRIBUTED))
    assert fixed.round_settings() == {}
    fixed.apply_round_settings({})
    with pytest.raises(InvalidPrivacyParameter, match="does not adapt"):
        fixed.apply_round_settings({"clip": 0.5})
