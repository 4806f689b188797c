"""CKKS parameters for a sum of clipped updates, derived in one place from what that sum needs.

Only encryption, addition and decryption ever happen, so one small ring serves every job: N = 2048 and a
single 54-bit prime q0 (the HE standard's limit for 128-bit classical security at N = 2048; with one prime
SEAL needs no special prime and no key switching). Reals go straight into the plaintext's coefficients
(coefficient encoding, N reals per ciphertext: adding needs no slots, and the canonical embedding would
multiply the coefficient noise by sqrt(N/2) in every slot). The scale is the largest that keeps the sum of
``max_clients`` contributions from wrapping around q0::

    scale * (max_clients * magnitude + NOISE_TAIL * sqrt(max_clients) * error_std) < q0 / 2

Each client's ciphertext travels compressed (:mod:`secagg.ckks.compact`): c0 and c1 in coefficient form with
their low ``c0_drop`` and ``c1_drop`` bits rounded away. Per coefficient that adds to the decryption a
variance of ``4^d0 / 12 + (2N/3) 4^d1 / 12`` (integer units; c1's rounding error is multiplied by the ternary
secret key, about 2N/3 non-zero terms) on top of the encryption noise ``3.2^2 (4N/3 + 1)``. The drops are the
largest whose total, divided by scale^2, is at most masking's per-client quantization variance at
``precision_bits`` (stochastic rounding with step clip / (2^(p-1) - 1): step^2 / 6), so a CKKS sum is at
least as precise as a masked one of the same clients, for about 2 x (precision_bits + log2 clients + 8)
bits per real instead of 2 x 64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import tenseal.sealapi as seal

from secagg.ckks.compact import Layout
from secagg.errors import ConfigurationError

NOISE_TAIL = 15.0  # P(|N(0, 1)| > 15) < 2^-165
ENCRYPTION_SIGMA = 3.2  # SEAL's error distribution (clipped normal)
MIN_FLOOD = 2.0**8  # the key holder's flooding noise, in coefficient units, is at least this (RLWE's is 3.2)

# Homomorphic Encryption Standard (2018), ternary secrets, classical 128-bit security: max total log2 q.
MAX_LOG_Q_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@lru_cache(maxsize=16)
def _prime(degree: int, bits: int) -> int:
    return int(seal.CoeffModulus.Create(degree, [bits])[0].value())


@dataclass(frozen=True)
class CKKSParams:
    """What the parties agree on: the inputs (clip, weight bound, distributed-DP noise, how many clients a sum
    may have, the precision to match) and, derived from them in ``__post_init__``, q0, the scale and the
    compression of uploads.

    ``clip`` bounds each update coordinate; ``max_weight`` is the public bound on a client's weight.
    ``noise_sigma``: each client adds N(0, noise_sigma^2) to every weighted coordinate *after* clipping, so
    nothing clips the noise (distributed DP, :mod:`dp.clipping`); 0 adds none.
    ``flood_bits``: the key holder adds Gaussian noise of standard deviation 2^-flood_bits to every
    decrypted coordinate and ``release_bits`` rounds the result to a grid of 2^-release_bits before release
    (see docs/threat-model.md).
    """

    clip: float = 1.0
    max_weight: float = 1.0
    noise_sigma: float = 0.0
    max_clients: int = 100
    precision_bits: int = 20
    flood_bits: int = 24
    release_bits: int = 30
    poly_modulus_degree: int = 2048
    modulus_bits: int = 54
    modulus: int = field(init=False)  # q0
    scale: float = field(init=False)
    c0_drop: int = field(init=False)  # low bits of c0 (of c1) rounded away in an upload
    c1_drop: int = field(init=False)
    error_std: float = field(init=False)  # one client's decryption error per coordinate (standard deviation)

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in MAX_LOG_Q_128:
            raise ConfigurationError(f"poly_modulus_degree must be one of {sorted(MAX_LOG_Q_128)}, got {n}")
        if not 20 <= self.modulus_bits <= 60:
            raise ConfigurationError(f"modulus_bits must be in [20, 60], got {self.modulus_bits}")
        if self.modulus_bits > MAX_LOG_Q_128[n]:
            raise ConfigurationError(f"{self.modulus_bits} modulus bits exceed the 128-bit security limit of "
                                     f"{MAX_LOG_Q_128[n]} for N={n}")
        if not (math.isfinite(self.clip) and self.clip > 0 and math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigurationError("clip and max_weight must be finite and positive")
        if not (math.isfinite(self.noise_sigma) and self.noise_sigma >= 0):
            raise ConfigurationError(f"noise_sigma must be finite and non-negative, got {self.noise_sigma}")
        if not (isinstance(self.max_clients, int) and self.max_clients >= 1):
            raise ConfigurationError(f"max_clients must be a positive integer, got {self.max_clients}")
        if not 2 <= self.precision_bits <= 40:
            raise ConfigurationError(f"precision_bits must be in [2, 40], got {self.precision_bits}")
        if not 0 < self.flood_bits <= self.release_bits:
            raise ConfigurationError("need 0 < flood_bits <= release_bits")
        q = _prime(n, self.modulus_bits)
        target = self.masking_error_std  # per client, per coordinate
        clients = self.max_clients
        scale = q / (2 * (clients * self.magnitude + NOISE_TAIL * math.sqrt(clients) * target)) * (1 - 2.0**-20)
        drops = _drops(n, q, (target * scale) ** 2)
        if drops is None:
            raise ConfigurationError(f"{clients} clients at {self.precision_bits} bits of precision could wrap "
                                     f"the CKKS sum around q0 (the encryption noise alone is too large)")
        if scale * 2.0**-self.flood_bits < MIN_FLOOD or scale < 2.0**self.release_bits:
            raise ConfigurationError(f"flood_bits {self.flood_bits} or release_bits {self.release_bits} too fine "
                                     f"for a scale of 2^{math.log2(scale):.1f} ({clients} clients)")
        for name, value in (("modulus", q), ("scale", scale), ("c0_drop", drops[0]), ("c1_drop", drops[1]),
                            ("error_std", math.sqrt(_variance(n, *drops)) / scale)):
            object.__setattr__(self, name, value)

    @property
    def reals_per_ciphertext(self) -> int:
        return self.poly_modulus_degree  # one real per coefficient

    @property
    def magnitude(self) -> float:
        """A bound on one encrypted coordinate: the clip (or the weight fraction, at most 1), plus
        :data:`NOISE_TAIL` standard deviations of the distributed-DP noise a client adds after clipping
        (exceeded with probability below 2^-100 per coordinate; an aggregate that does is refused, never
        released, see :mod:`secagg.ckks.bounds`)."""
        return max(self.clip, 1.0) + NOISE_TAIL * self.noise_sigma

    @property
    def masking_error_std(self) -> float:
        """Masking's per-client quantization error at ``precision_bits`` (see :mod:`secagg.encoding`)."""
        return self.clip / (2.0 ** (self.precision_bits - 1) - 1) / math.sqrt(6)

    @property
    def layout(self) -> Layout:
        """How uploads are compacted: the modulus, the ring degree and the bits dropped from c0 and c1."""
        return Layout(self.modulus, self.poly_modulus_degree, self.c0_drop, self.c1_drop)

    def check_clients(self, clients: int) -> None:
        if clients > self.max_clients:
            raise ConfigurationError(f"{clients} clients could wrap the CKKS sum around q0; at most "
                                     f"{self.max_clients} with these parameters")

    def encryption_parameters(self) -> seal.EncryptionParameters:
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(self.poly_modulus_degree)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(self.poly_modulus_degree, [self.modulus_bits]))
        return parms

    def context(self) -> seal.SEALContext:
        ctx = seal.SEALContext(self.encryption_parameters(), True, seal.SEC_LEVEL_TYPE.TC128)
        if not ctx.parameters_set():
            raise ConfigurationError(f"SEAL refused the parameters: {ctx.parameters_error_message()}")
        return ctx


def _variance(degree: int, c0_drop: int, c1_drop: int) -> float:
    """One client's decryption error variance per coefficient, integer units: encryption, then rounding."""
    encryption = ENCRYPTION_SIGMA**2 * (4 * degree / 3 + 1)
    return encryption + 4.0**c0_drop / 12 + (2 * degree / 3) * 4.0**c1_drop / 12


def _drops(degree: int, modulus: int, budget: float) -> tuple[int, int] | None:
    """The (c0, c1) drops that round away the most bits within ``budget``; the smaller variance on ties."""
    best: tuple[tuple[int, float], int, int] | None = None
    for d0 in range(modulus.bit_length()):
        for d1 in range(modulus.bit_length()):
            variance = _variance(degree, d0, d1)
            if variance <= budget and (best is None or (d0 + d1, -variance) > best[0]):
                best = ((d0 + d1, -variance), d0, d1)
    return None if best is None else (best[1], best[2])
