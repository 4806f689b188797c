"""The named choices of a simulated job (dataset, partition, protection mode, DP mode, runtime), with no heavy
imports: what ``secagg --help`` lists without loading torch."""

from __future__ import annotations

import enum


class DatasetName(enum.Enum):
    DIGITS = "digits"
    BREAST_CANCER = "breast_cancer"
    SYNTHETIC = "synthetic"


class PartitionScheme(enum.Enum):
    IID = "iid"
    DIRICHLET = "dirichlet"
    QUANTITY = "quantity"


class SecureMode(enum.Enum):
    """How client updates are hidden from the server."""

    NONE = "none"
    MASK = "mask"
    CKKS = "ckks"


class DPMode(enum.Enum):
    """Where differential-privacy noise is added: in each client's SGD (example-level), by the server to the
    aggregate, or by the clients as shares of the aggregate's noise (client-level)."""

    NONE = "none"
    LOCAL = "local"
    CENTRAL = "central"
    DISTRIBUTED = "distributed"


class RuntimeName(enum.Enum):
    """Where ``secagg run`` runs the job: simulated in this process, or on Flower (results.json says which)."""

    IN_PROCESS = "inprocess"
    FLOWER = "flower"
