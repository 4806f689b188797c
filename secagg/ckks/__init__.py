"""CKKS homomorphic-encryption aggregation (TenSEAL's SEAL binding) with separated key roles."""

from secagg.ckks.keyholder import KeyHolder
from secagg.ckks.packing import PublicContext
from secagg.ckks.params import CKKSParams
from secagg.ckks.protocol import CKKSAggregator
from secagg.ckks.request import DecryptionRequest, Release, SignedSketch

__all__ = ["CKKSAggregator", "CKKSParams", "DecryptionRequest", "KeyHolder", "PublicContext", "Release",
           "SignedSketch"]
