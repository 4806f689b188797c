"""How many threads torch uses while simulated clients train one after another in this process.

torch parallelizes each operation over all cores by default. The simulated clients of a federation train
one after another, and each operation on a small model is too short for the threads to pay for their
synchronization: on the 2-core development machine the default job's round is faster with one thread than
with two (docs/benchmarks.md, "Threads"). So the policy is:

- an explicit ``threads`` (``Federation(threads=N)``, ``secagg run --threads N``) is used as given;
- otherwise a model of fewer than :data:`SMALL_MODEL_PARAMS` parameters trains with one thread, and a
  larger one with torch's own default (large matrix products do gain from intra-op parallelism).

The setting holds while a round's clients train and is restored afterwards, so the caller's own torch code
is unaffected.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from federation.errors import ConfigError

SMALL_MODEL_PARAMS = 1_000_000


def check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None (the policy), got {threads!r}")
    return threads


def policy_threads(threads: int | None, parameters: int) -> int | None:
    """The intra-op thread count for clients of a model of ``parameters`` (None: torch's default)."""
    if check_threads(threads) is not None:
        return threads
    return 1 if parameters < SMALL_MODEL_PARAMS else None


@contextmanager
def intra_op_threads(threads: int | None, parameters: int) -> Iterator[None]:
    """torch's intra-op threads set by :func:`policy_threads` for the duration of the block."""
    chosen = policy_threads(threads, parameters)
    if chosen is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(chosen)
    try:
        yield
    finally:
        torch.set_num_threads(before)
