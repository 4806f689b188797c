"""CKKS homomorphic-encryption aggregation (TenSEAL's SEAL binding) with separated key roles."""

from secagg.ckks.keyholder import DecryptionRequest, KeyHolder, Release
from secagg.ckks.packing import PublicContext
from secagg.ckks.params import CKKSParams
from secagg.ckks.protocol import CKKSAggregator

__all__ = ["CKKSAggregator", "CKKSParams", "DecryptionRequest", "KeyHolder", "PublicContext", "Release"]
