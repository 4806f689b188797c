"""A Flower run in a background thread, so a test can act on it at a given stage (kill a node there)."""

from __future__ import annotations

import threading
import time

from federation.flower.job import FlowerJob
from federation.flower.launcher import LocalFlower


class BackgroundRun:
    """``flower.run(job)`` in a thread; what it raised is kept for the test's own thread (:meth:`join`)."""

    def __init__(self, flower: LocalFlower, job: FlowerJob, timeout: float) -> None:
        self.job, self.errors = job, []
        self.thread = threading.Thread(target=self._run, args=(flower, timeout))
        self.thread.start()

    def _run(self, flower: LocalFlower, timeout: float) -> None:
        try:
            flower.run(self.job, timeout=timeout)
        except BaseException as err:  # noqa: BLE001 - reported by the test's thread
            self.errors.append(err)

    def wait_for_stage(self, stage: int, within: float) -> None:
        """Return as soon as the server has written that it starts ``stage`` (before it sends that stage's
        messages): progress is read every 5 ms, since a node answers within about 0.1 s of a stage."""
        progress, deadline = self.job.out / "progress.jsonl", time.monotonic() + within
        while not (progress.exists() and f'"stage": {stage}' in progress.read_text()):
            assert time.monotonic() < deadline and self.thread.is_alive(), f"the run never reached stage {stage}"
            time.sleep(0.005)

    def join(self) -> list[BaseException]:
        self.thread.join()
        return self.errors
