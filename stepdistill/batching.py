"""Dynamic batching: requests that arrive close together share one model call.

The server's handlers submit jobs; one worker thread owns the model. It takes the
first waiting job, waits a short window for more, groups the jobs that can share a
call (same kind of generation), and runs each group as one batched call. A small
model on a CPU answers 8 inputs in little more time than 1, so under concurrent load
this multiplies throughput; with ``enabled=False`` each job runs alone (the baseline
the benchmark compares against).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

Runner = Callable[[Hashable, list[Any]], list[Any]]
"""``runner(key, items) -> results``: one model call for the items of every job of a
group (concatenated), one result per item, in order."""


class QueueFull(RuntimeError):
    """Too many jobs are waiting: the caller should answer 503 and let the client retry."""


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    future: Future[list[Any]] = field(default_factory=Future)


class Batcher:
    """A worker thread that runs submitted jobs, batching compatible ones together."""

    def __init__(
        self,
        runner: Runner,
        *,
        enabled: bool = True,
        wait_ms: float = 5.0,
        max_batch_items: int = 64,
        max_queue: int = 1024,
    ) -> None:
        self.runner = runner
        self.enabled = enabled
        self.wait_s = wait_ms / 1000
        self.max_batch_items = max_batch_items
        self.max_queue = max_queue
        self.calls = 0
        """Model calls made so far (the tests and the benchmark read it)."""
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="stepdistill-batcher", daemon=True)
        self._thread.start()

    def submit(self, key: Hashable, items: list[Any]) -> Future[list[Any]]:
        """Queue a job; its future gets one result per item (or the runner's exception)."""
        if self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self.max_queue} requests are already waiting; retry shortly")
        job = _Job(key, list(items))
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs = [first]
            if self.enabled:
                jobs += self._gather(len(first.items))
            groups: dict[Hashable, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                self._run(key, group)

    def _gather(self, items: int) -> list[_Job]:
        """More jobs that arrive within the wait window, up to ``max_batch_items``."""
        gathered: list[_Job] = []
        deadline = time.monotonic() + self.wait_s
        while items < self.max_batch_items:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # close(): finish this batch, then stop
                break
            gathered.append(job)
            items += len(job.items)
        return gathered

    def _run(self, key: Hashable, group: list[_Job]) -> None:
        items = [item for job in group for item in job.items]
        try:
            self.calls += 1
            results = self.runner(key, items)
        except Exception as error:  # noqa: BLE001 - handed to every waiting request
            for job in group:
                job.future.set_exception(error)
            return
        start = 0
        for job in group:
            job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)
