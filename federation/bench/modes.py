"""The protection modes ``secagg bench`` measures (no heavy imports: ``secagg --help`` lists them)."""

from __future__ import annotations

import enum


class BenchMode(enum.Enum):
    NONE = "none"
    MASK = "mask"
    MASK_ACTIVE = "mask-active"  # masking with the consistency check: secure against a deviating server
    CKKS = "ckks"
