"""Floors measured in the same run as the protocols: what no implementation can beat on this machine."""

from __future__ import annotations

import os
import time

import numpy as np

from secagg.primitives.prg import MaskExpander


def _median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def prg_seconds(words: int, dtype: np.dtype | type = np.uint32, repeat: int = 51) -> float:
    """One raw AES-CTR expansion of ``words`` ring words into a preallocated buffer."""
    expander = MaskExpander(words, dtype)
    seed = os.urandom(32)
    return _median_seconds(lambda: expander.expand(seed), repeat)


def float32_sum_seconds(params: int, repeat: int = 51) -> float:
    """Adding one float32 vector of ``params`` into an accumulator (the plaintext server's unit of work)."""
    acc = np.zeros(params, np.float32)
    x = np.ones(params, np.float32)
    return _median_seconds(lambda: np.add(acc, x, out=acc), repeat)
