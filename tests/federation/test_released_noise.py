"""The noise a release really carries is the noise its privacy event accounts: zero updates through every real
aggregator stack (protection x client-level DP mode), the released sum's standard deviation measured."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dp.events import DistributedDiscreteGaussianEvent, DistributedGaussianEvent, GaussianEvent
from federation import protection
from federation.config import CKKS, CentralDP, DistributedDP, Masking
from tests.secagg.driver import run_round

DIMENSION, CLIENTS, CLIP = 20000, 5, 0.5


def released_sum(secure, dp, precision_bits: int = 20) -> tuple[np.ndarray, object, object]:
    if isinstance(secure, Masking):
        secure = Masking(neighbors=0, precision_bits=precision_bits)
    population = protection.Population((10,) * CLIENTS, (1,) * CLIENTS, CLIENTS, min_clients=2)
    stack = protection.build(secure, dp, population)
    updates = {c: np.zeros(DIMENSION, np.float32) for c in range(CLIENTS)}
    _, result = run_round(stack.aggregator, updates, drop_stage={4: 0})  # one dropout: 4 contributions
    (event,) = result.events
    return result.mean.astype(np.float64) * len(result.contributors), event, stack.aggregator


def accounted_std(event, aggregator, k: int) -> float:
    """The standard deviation of the noise on the released sum that ``event`` claims, in update units."""
    if isinstance(event, GaussianEvent):  # sensitivity: the clip, or a masking encoding's reach
        inner = aggregator.inner
        if hasattr(inner, "encoder") and hasattr(inner, "config"):
            from secagg.aggregation import RoundContext

            encoder = inner.encoder(RoundContext.new(1, tuple(range(CLIENTS)), DIMENSION, 2))
            return event.noise_multiplier * encoder.l2_sensitivity(CLIP) / encoder.scale
        return event.noise_multiplier * CLIP
    if isinstance(event, DistributedGaussianEvent):
        return event.effective_noise_multiplier * CLIP
    assert isinstance(event, DistributedDiscreteGaussianEvent)
    scale = (event.sensitivity - math.sqrt(event.dimension)) / CLIP  # ring units per update unit
    return event.effective_noise_multiplier * event.sensitivity / scale


@pytest.mark.parametrize("z", [1.0, 3.0])
@pytest.mark.parametrize("secure, dp_kind", [
    (None, CentralDP), (Masking(), CentralDP), (CKKS(), CentralDP),
    (Masking(), DistributedDP), (CKKS(), DistributedDP),
])
def test_released_noise_matches_the_accounted_noise(secure, dp_kind, z):
    total, event, aggregator = released_sum(secure, dp_kind(noise_multiplier=z, clip=CLIP))
    claimed = accounted_std(event, aggregator, 4)
    assert total.std() == pytest.approx(claimed, rel=0.05), (type(event).__name__, total.std(), claimed)
    assert abs(total.mean()) < 5 * claimed / math.sqrt(DIMENSION)


def test_secure_mode_central_noise_matches_the_accounted_noise():
    total, event, aggregator = released_sum(CKKS(), CentralDP(noise_multiplier=2.0, clip=CLIP, secure_mode=True))
    assert total.std() == pytest.approx(accounted_std(event, aggregator, 4), rel=0.05)


def test_central_noise_under_masking_covers_the_quantized_sensitivity():
    """At 8 precision bits a client's encoding reaches well past C: the central noise is scaled to that reach."""
    total, event, aggregator = released_sum(Masking(), CentralDP(noise_multiplier=1.0, clip=CLIP), precision_bits=8)
    encoder_reach = accounted_std(event, aggregator, 4)
    assert encoder_reach > 1.5 * CLIP
    assert total.std() == pytest.approx(encoder_reach, rel=0.05)


def test_ckks_distributed_noise_is_never_clipped():
    """Before the fix the noise shares were clipped to the encoding range: 0.41x the accounted std at z = 3."""
    total, event, _ = released_sum(CKKS(clip=0.1), DistributedDP(noise_multiplier=3.0, clip=CLIP))
    assert total.std() == pytest.approx(event.effective_noise_multiplier * CLIP, rel=0.05)
    assert np.abs(total).max() > 4 * 0.1 * 4  # far beyond what clipped shares could sum to


def test_dp_sgd_releases_the_accounted_noise_in_the_update():
    """Example level: a loss with zero gradient leaves only DP-SGD's noise in the update; each of the ``steps``
    accounted steps adds N(0, (z C)^2) to the summed gradient, divided by the expected batch size."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from dp.dpsgd import DPSGDConfig
    from federation.client import FederatedClient

    def zero_loss(model, loader, optimizer):
        for xb, _ in loader:
            optimizer.zero_grad()
            (model(xb) * 0.0).sum().backward()
            optimizer.step()

    torch.manual_seed(0)
    model = nn.Linear(200, 50)
    data = TensorDataset(torch.randn(256, 200), torch.zeros(256, dtype=torch.long))
    client = FederatedClient(model, torch.optim.SGD(model.parameters(), lr=1.0), DataLoader(data, batch_size=32),
                             zero_loss, local_epochs=2, dp_sgd=DPSGDConfig(noise_multiplier=1.5, max_grad_norm=0.5))
    start = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    local = client.fit(start, seed=1)
    (event,) = local.events
    expected_batch = round(event.sampling_rate * 256)
    claimed = event.noise_multiplier * 0.5 * math.sqrt(event.count) / expected_batch
    assert local.delta.std() == pytest.approx(claimed, rel=0.05)
