"""The C allocator setting a long-lived aggregator runs with.

glibc raises its threshold for serving an allocation by ``mmap`` after the first large buffer is freed; later
buffers of an upload's size then come from the heap, which fragments, and an aggregator's resident set grows
with the clients of a round although it holds O(model) (CKKS at 1e6 parameters: 97 MiB at 10 clients, 208 MiB
at 100; pinned, 104 and 88; docs/benchmarks.md, "Server memory"). Pinning the threshold returns every large
freed buffer to the system. The Flower ServerApp and the memory bench's server process pin it; an in-process
federation leaves the user's process as it is (set ``MALLOC_MMAP_THRESHOLD_=131072`` to do the same).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def pin_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """Serve every allocation of ``threshold`` bytes or more by ``mmap``, for good; False where the C library
    has no ``mallopt`` (not glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False
