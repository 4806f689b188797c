"""How long our Flower processes wait between polls: short right after activity, longer as idleness lasts.

Flower's components find work by polling (the SuperNode asks the SuperLink for messages, a ClientApp
executor asks its SuperNode for tasks, the ServerApp asks the SuperLink for answers). A fixed short interval
costs CPU while a node waits for others; a fixed long one adds its length to every message. Here the wait
is a ``share`` of the time already spent idle, between ``fastest`` and ``slowest``: a message that comes
soon after the last is picked up within milliseconds, and a node idle for seconds polls a few times a second.

Flower 1.42 has fixed waits of its own in the SuperNode loop and in its object transfers; in our own
processes (our SuperNode wrapper, the ClientApp executor, the ServerApp) they are shortened here, in one
place, and only for the Flower version they were read from.
"""

from __future__ import annotations

import functools
import logging
import time
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)
_IDLE_SLEEP, _REPLY_SLEEP = 3, 0.5  # the two waits of flwr 1.42's SuperNode loop (start_client_internal)
# Flower retries an object that is not yet uploaded after 1 s, then 2 s, 4 s ... (PULL_INITIAL_BACKOFF): a
# node that polls soon after a message was announced often asks before its objects have arrived.
OBJECT_RETRY_FIRST, OBJECT_RETRY_CAP = 0.01, 0.5


class Backoff:
    """Waits ``share`` of the idle time so far, clamped to [``fastest``, ``slowest``] seconds."""

    def __init__(self, fastest: float, slowest: float, share: float = 0.25) -> None:
        if not 0 < fastest <= slowest:
            raise ValueError(f"poll intervals must satisfy 0 < fastest <= slowest, got {fastest}, {slowest}")
        self.fastest, self.slowest, self.share = fastest, slowest, share
        self._idle_since: float | None = None

    def busy(self) -> None:
        """Work arrived: the next wait is the shortest again."""
        self._idle_since = None

    def interval(self) -> float:
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        return min(self.slowest, max(self.fastest, self.share * (now - self._idle_since)))

    def wait(self, limit: float | None = None) -> None:
        """Sleep one interval (at most ``limit`` seconds)."""
        seconds = self.interval()
        time.sleep(seconds if limit is None else max(0.0, min(seconds, limit)))


class PollClock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop, with shorter waits (see above)."""

    def __init__(self, fastest: float, slowest: float = 1.0, reply: float = 0.01) -> None:
        self.backoff, self.reply = Backoff(fastest, max(slowest, fastest)), reply
        self._woke = 0.0

    def sleep(self, seconds: float) -> None:
        if seconds == _IDLE_SLEEP:  # an empty pull from the SuperLink
            if time.monotonic() - self._woke > self.backoff.interval() + 0.05:  # a message came in between
                self.backoff.busy()
            self.backoff.wait()
            self._woke = time.monotonic()
        elif seconds == _REPLY_SLEEP:
            time.sleep(self.reply)
        else:
            time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _known_flower() -> bool:
    import flwr

    if str(flwr.__version__).startswith("1.42."):
        return True
    log.warning("flwr %s: Flower's own polling intervals are kept", flwr.__version__)
    return False


def patch_supernode_loop(module: ModuleType, fastest: float) -> bool:
    """Give Flower's SuperNode loop (``flwr.supernode.start_client_internal``) a :class:`PollClock` and
    short object retries; False (nothing changed) for another Flower version."""
    if not _known_flower() or getattr(module, "time", None) is not time:
        return False
    module.time = PollClock(fastest)  # type: ignore[attr-defined]
    return shorten_object_retries(module, "pull_objects")


def shorten_object_retries(module: ModuleType, name: str, max_time: float | None = None) -> bool:
    """Have ``module``'s ``name`` (Flower's ``pull_objects`` or ``pull_and_inflate_object_from_tree``) ask
    again for an object not yet uploaded after 10 ms, doubling up to 0.5 s, instead of 1 s up to 10 s.

    ``max_time``: give up on an object after that many seconds (Flower's ``pull_objects`` only; it then answers
    an error in place of the message). Flower's own limit is 500 tries (about 4 minutes at these intervals), and
    one message whose sender died while uploading it holds up every answer pulled with it for that long."""
    original = getattr(module, name, None)
    if not _known_flower() or original is None or isinstance(original, functools.partial):
        return False
    limits: dict[str, float] = {} if max_time is None else {"max_time": max_time}
    setattr(module, name, functools.partial(original, initial_backoff=OBJECT_RETRY_FIRST,
                                            backoff_cap=OBJECT_RETRY_CAP, **limits))
    return True
