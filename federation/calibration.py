"""The noise multiplier of a DP mode: calibrated for a target epsilon from the registered clients (the server,
:func:`noise_multiplier`), and checked by a client in its own process against its own settings before it
trains or adds noise with the one the server announces (:func:`check_noise_multiplier`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from federation.config import DPSGD, CentralDP, DistributedDP
from federation.errors import ConfigError

if TYPE_CHECKING:
    from federation.protection import Population


def noise_multiplier(dp: DPSGD | CentralDP | DistributedDP, population: Population) -> float:
    """``dp.noise_multiplier``, or the smallest one that keeps every client within ``dp.target_epsilon`` after
    every round (RDP). DP-SGD: Opacus samples each batch at rate 1 / batches per epoch, so the client with the
    fewest batches is the binding one. Client-level DP: no sampling amplification is claimed (clients are
    drawn without replacement: no amplification) or, under Poisson client sampling, amplified at rate q."""
    if dp.noise_multiplier is not None:
        return float(dp.noise_multiplier)
    import warnings

    from opacus.accountants.utils import get_noise_multiplier

    def calibrated(rate: float, steps: int) -> float:
        with warnings.catch_warnings():  # Opacus's "optimal order is the largest alpha" while it searches
            warnings.simplefilter("ignore", UserWarning)
            return float(get_noise_multiplier(target_epsilon=dp.target_epsilon, target_delta=dp.delta,
                                              sample_rate=rate, steps=steps, accountant="rdp"))

    if not isinstance(dp, DPSGD):
        return calibrated(population.sampling_rate or 1.0, population.rounds)
    # DP-SGD: a client of b batches per epoch samples at 1 / b for rounds * epochs * b steps; the binding
    # client is usually the one with the fewest batches, but not always (rates near 1): check them all
    epochs = population.rounds * population.local_epochs
    z = calibrated(1.0 / min(population.batches), epochs * min(population.batches))
    for _ in range(8):
        worst = max(set(population.batches), key=lambda b: dpsgd_epsilon(z, b, epochs, dp.delta))
        if dpsgd_epsilon(z, worst, epochs, dp.delta) <= dp.target_epsilon * (1 + 1e-9):
            return z
        z = max(z, calibrated(1.0 / worst, epochs * worst)) * 1.001
    raise ConfigError(f"DPSGD: no noise multiplier found that keeps every client within epsilon {dp.target_epsilon}")


def dpsgd_epsilon(z: float, batches: int, epochs: int, delta: float) -> float:
    """A DP-SGD client's epsilon after ``epochs`` epochs of ``batches`` Poisson-sampled batches at noise ``z``
    (Opacus's RDP accountant: its coarser order grid gives epsilons at or above ours)."""
    import warnings

    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(z, 1.0 / batches, epochs * batches)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta))


def check_noise_multiplier(dp: DPSGD | CentralDP | DistributedDP, population: Population, z: float,
                           batches: int) -> None:
    """A client's check of the noise multiplier ``z`` the server announces, before it trains or adds noise with
    it (:class:`~dp.errors.NoiseTooLow`): the configured one; for a target epsilon under client-level DP, at
    least the calibrated one (it depends on the run's settings only, so the client computes it itself); under
    DP-SGD, one that keeps this client, with its own ``batches`` per epoch, within the target."""
    from dp.errors import NoiseTooLow

    if isinstance(z, bool) or not (isinstance(z, (int, float)) and math.isfinite(z) and z > 0):
        raise NoiseTooLow(f"the server announced a noise multiplier that is not a positive number: {z!r}")
    if dp.noise_multiplier is not None:
        if z != dp.noise_multiplier:
            raise NoiseTooLow(f"the server announced noise multiplier {z:.6g}; this run's is {dp.noise_multiplier:.6g}")
        return
    assert dp.target_epsilon is not None
    if isinstance(dp, DPSGD):
        try:
            epsilon = dpsgd_epsilon(z, batches, population.rounds * population.local_epochs, dp.delta)
        except (ArithmeticError, ValueError):  # z so small or large the accountant's floats fail (1 / z^2, exp)
            from dataclasses import replace

            own = noise_multiplier(dp, replace(population, batches=(batches,)))  # this client's own calibration
            if z >= own:
                return
            raise NoiseTooLow(f"noise multiplier {z:.6g} is below the {own:.6g} this client's target epsilon "
                              f"{dp.target_epsilon:g} needs") from None
        if epsilon > dp.target_epsilon * (1 + 1e-9):
            raise NoiseTooLow(f"noise multiplier {z:.6g} would spend epsilon {epsilon:.4g} of this client's data "
                              f"over the run, above the target {dp.target_epsilon:g}")
        return
    own = noise_multiplier(dp, population)
    if z < own * (1 - 1e-9):
        raise NoiseTooLow(f"the server announced noise multiplier {z:.6g}; the target epsilon "
                          f"{dp.target_epsilon:g} of this run needs at least {own:.6g}")
