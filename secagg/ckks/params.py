"""CKKS parameters chosen for addition only, checked against the HE standard's 128-bit table.

No multiplication ever happens, so the modulus chain is minimal: one data prime q0 (ciphertexts live mod
q0 alone) and one special prime that SEAL uses to encrypt with less noise. q0 must hold the largest sum:
``clients * clip * 2^scale_bits < 2^(q0_bits - 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tenseal.sealapi as seal

from secagg.errors import ConfigurationError

NOISE_TAIL = 15.0  # P(|N(0, 1)| > 15) < 2^-165

# Homomorphic Encryption Standard (2018), ternary secrets, classical 128-bit security: max total log2 q.
MAX_LOG_Q_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class CKKSParams:
    """``poly_modulus_degree`` N (N/2 complex slots, two reals each), primes in bits, scale 2^scale_bits.

    ``clip`` bounds each update coordinate; ``max_weight`` is the public bound on a client's weight.
    ``noise_sigma``: each client adds N(0, noise_sigma^2) to every weighted coordinate *after* clipping, so
    nothing clips the noise (distributed DP, :mod:`dp.clipping`); 0 adds none.
    ``flood_bits``: the key holder adds Gaussian noise of standard deviation 2^-flood_bits to every
    decrypted coordinate and ``release_bits`` rounds the result to a grid of 2^-release_bits before release
    (see docs/threat-model.md for the bound).
    """

    poly_modulus_degree: int = 4096
    coeff_bits: tuple[int, ...] = (55, 54)
    scale_bits: int = 45
    clip: float = 1.0
    max_weight: float = 1.0
    flood_bits: int = 24
    release_bits: int = 30
    noise_sigma: float = 0.0

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in MAX_LOG_Q_128:
            raise ConfigurationError(f"poly_modulus_degree must be one of {sorted(MAX_LOG_Q_128)}, got {n}")
        if not 1 <= len(self.coeff_bits) <= 2 or any(not 20 <= b <= 60 for b in self.coeff_bits):
            raise ConfigurationError(f"coeff_bits must be one or two primes of 20-60 bits, got {self.coeff_bits}")
        if sum(self.coeff_bits) > MAX_LOG_Q_128[n]:
            raise ConfigurationError(f"{sum(self.coeff_bits)} modulus bits exceed the 128-bit security limit of "
                                     f"{MAX_LOG_Q_128[n]} for N={n}")
        if not 10 <= self.scale_bits < self.coeff_bits[0] - 1:
            raise ConfigurationError(f"scale_bits {self.scale_bits} must be in [10, {self.coeff_bits[0] - 1})")
        if not (math.isfinite(self.clip) and self.clip > 0 and math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigurationError("clip and max_weight must be finite and positive")
        if not (math.isfinite(self.noise_sigma) and self.noise_sigma >= 0):
            raise ConfigurationError(f"noise_sigma must be finite and non-negative, got {self.noise_sigma}")
        if not 0 < self.flood_bits <= self.release_bits <= self.scale_bits:
            raise ConfigurationError("need 0 < flood_bits <= release_bits <= scale_bits")

    @property
    def reals_per_ciphertext(self) -> int:
        return self.poly_modulus_degree  # N/2 slots, a complex number (two reals) in each

    @property
    def scale(self) -> float:
        return 2.0**self.scale_bits

    @property
    def magnitude(self) -> float:
        """A bound on one encrypted coordinate: the clip, plus :data:`NOISE_TAIL` standard deviations of the
        distributed-DP noise a client adds after clipping (exceeded with probability below 2^-100 per
        coordinate; an aggregate that does is refused, never released, see :mod:`secagg.ckks.bounds`)."""
        return self.clip + NOISE_TAIL * self.noise_sigma

    def max_clients(self) -> int:
        """The most summands whose sum cannot wrap around q0."""
        return int(2.0 ** (self.coeff_bits[0] - 1 - self.scale_bits) / self.magnitude)

    def check_clients(self, clients: int) -> None:
        if clients > self.max_clients():
            raise ConfigurationError(f"{clients} clients could wrap the CKKS sum around q0; at most "
                                     f"{self.max_clients()} with these parameters")

    def encryption_parameters(self) -> seal.EncryptionParameters:
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(self.poly_modulus_degree)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(self.poly_modulus_degree, list(self.coeff_bits)))
        return parms

    def context(self) -> seal.SEALContext:
        ctx = seal.SEALContext(self.encryption_parameters(), True, seal.SEC_LEVEL_TYPE.TC128)
        if not ctx.parameters_set():
            raise ConfigurationError(f"SEAL refused the parameters: {ctx.parameters_error_message()}")
        return ctx
