"""The noise multiplier a node accepts from the server: never less than its own settings require."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from dp.errors import NoiseTooLow
from federation.calibration import check_noise_multiplier, dpsgd_epsilon, noise_multiplier
from federation.config import DPSGD, CentralDP, DistributedDP
from federation.protection import Population

POPULATION = Population((1,) * 4, (1,) * 4, per_round=4, rounds=5, local_epochs=2)


@pytest.mark.parametrize("dp", [CentralDP(target_epsilon=4.0), DistributedDP(target_epsilon=8.0, clip=0.5)])
@settings(max_examples=25, deadline=None)
@given(factor=st.floats(0.5, 2.0))
def test_client_level_dp_accepts_the_calibrated_noise_or_more_only(dp, factor):
    z = noise_multiplier(dp, POPULATION)
    if factor >= 1.0:
        check_noise_multiplier(dp, POPULATION, z * factor, batches=1)
    elif factor < 1 - 1e-6:
        with pytest.raises(NoiseTooLow, match="needs at least"):
            check_noise_multiplier(dp, POPULATION, z * factor, batches=1)


def test_a_dp_sgd_client_checks_its_own_epsilon_from_its_own_batches():
    dp = DPSGD(target_epsilon=6.0)
    mixed = Population((100, 400), (7, 25), per_round=2, rounds=3, local_epochs=2)
    z = noise_multiplier(dp, mixed)  # the server's, for every client
    for batches in (7, 25):
        check_noise_multiplier(dp, mixed, z, batches)
        assert dpsgd_epsilon(z, batches, 6, dp.delta) <= 6.0 * (1 + 1e-9)
    with pytest.raises(NoiseTooLow, match="above the target"):
        check_noise_multiplier(dp, mixed, z * 0.8, 7)


@pytest.mark.parametrize("z", [0.99, 1.01, 0.0, -1.0, float("nan"), float("inf"), True, "1.0"])
def test_a_configured_noise_multiplier_must_be_the_one_announced(z):
    with pytest.raises(NoiseTooLow):
        check_noise_multiplier(CentralDP(noise_multiplier=1.0), POPULATION, z, batches=1)
    check_noise_multiplier(CentralDP(noise_multiplier=1.0), POPULATION, 1.0, batches=1)


@pytest.mark.parametrize("z, refused", [(5e-324, True), (1e-300, True), (1e308, False), (1e200, False)])
def test_extreme_announced_noise_is_a_typed_answer_under_dp_sgd(z, refused):
    """Review: Opacus's RDP accountant divides by z^2 (ZeroDivisionError for a subnormal z) and overflows for a
    huge one; a server's crafted z must give NoiseTooLow (too little) or be accepted (more noise), never an
    untyped crash of the node's enrolment handler."""
    dp = DPSGD(target_epsilon=6.0)
    if refused:
        with pytest.raises(NoiseTooLow):
            check_noise_multiplier(dp, POPULATION, z, batches=3)
    else:
        check_noise_multiplier(dp, POPULATION, z, batches=3)
