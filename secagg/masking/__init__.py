"""Pairwise-masking secure aggregation: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020)."""

from secagg.masking.aggregator import MaskingAggregator
from secagg.masking.config import MaskingConfig

__all__ = ["MaskingAggregator", "MaskingConfig"]
