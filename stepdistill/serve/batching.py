"""Dynamic batching: requests that arrive close together share one model call.

The server's handlers submit jobs; one worker thread owns the model. It takes the
first waiting job, waits a short window for more, groups the jobs that can share a
call (same kind of generation), and runs each group as one batched call. A small
model on a CPU answers 8 inputs in little more time than 1, so under concurrent load
this multiplies throughput; with ``enabled=False`` each job runs alone (the baseline
the benchmark compares against).

Hostile load: a job whose future was cancelled (its client went away) or whose
deadline passed is dropped before it reaches the model; a batched call that fails is
retried job by job, so one bad input fails only its own request; the queue is bounded
by jobs, inputs and characters; ``close()`` fails what is still waiting at once.
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


class Expired(TimeoutError):
    """The job's deadline passed before the model could run it."""


class ShuttingDown(RuntimeError):
    """The batcher was closed with the job still waiting."""


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    size: int = 0
    deadline: float | None = None
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
        max_queue_items: int = 8192,
        max_queue_size: int = 64_000_000,
    ) -> None:
        self.runner = runner
        self.enabled = enabled
        self.wait_s = wait_ms / 1000
        self.max_batch_items = max_batch_items
        self.max_queue = max_queue
        self.max_queue_items = max_queue_items
        self.max_queue_size = max_queue_size
        self._waiting = [0, 0, 0]  # jobs, items, size (characters) submitted, not yet taken
        self._lock = threading.Lock()
        self._closed = False
        self.dropped = 0
        """Jobs dropped unrun (cancelled or expired)."""
        self.calls = 0
        """Model calls made so far (the tests and the benchmark read it)."""
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="stepdistill-batcher", daemon=True)
        self._thread.start()

    def submit(
        self, key: Hashable, items: list[Any], size: int = 0, deadline: float | None = None
    ) -> Future[list[Any]]:
        """Queue a job; its future gets one result per item (or the runner's exception).
        ``size`` (e.g. characters) counts against ``max_queue_size``; ``deadline`` is a
        ``time.monotonic()`` after which the job is dropped unrun. Cancel the future to
        drop the job (a job the model is already running completes)."""
        with self._lock:
            jobs, waiting_items, waiting_size = self._waiting
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            if (
                jobs >= self.max_queue
                or waiting_items + len(items) > self.max_queue_items
                or waiting_size + size > self.max_queue_size
            ):
                raise QueueFull(
                    f"the queue is full ({jobs} requests, {waiting_items} inputs waiting); retry shortly"
                )
            self._waiting = [jobs + 1, waiting_items + len(items), waiting_size + size]
        job = _Job(key, list(items), size, deadline)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Fail every waiting job now (503 for its client), let the call in progress end."""
        with self._lock:
            self._closed = True
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._taken(job)
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(ShuttingDown("the server is shutting down"))
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _taken(self, job: _Job) -> None:
        with self._lock:
            jobs, items, size = self._waiting
            self._waiting = [jobs - 1, items - len(job.items), size - job.size]

    def _live(self, job: _Job) -> bool:
        """Take a job off the queue: False (and it is dropped) when cancelled or expired."""
        self._taken(job)
        if not job.future.set_running_or_notify_cancel():
            self.dropped += 1
            return False
        if job.deadline is not None and time.monotonic() > job.deadline:
            self.dropped += 1
            job.future.set_exception(Expired("the request's deadline passed while it waited"))
            return False
        return True

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if not self._live(first):
                continue
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
            if self._live(job):
                gathered.append(job)
                items += len(job.items)
        return gathered

    def _run(self, key: Hashable, group: list[_Job]) -> None:
        items = [item for job in group for item in job.items]
        try:
            self.calls += 1
            results = self.runner(key, items)
        except Exception as error:  # noqa: BLE001 - handed to the waiting request(s)
            if len(group) > 1:
                # One bad input must not fail the requests batched with it: run each
                # job alone, so the error reaches only the request that caused it.
                for job in group:
                    self._run(key, [job])
                return
            group[0].future.set_exception(error)
            return
        start = 0
        for job in group:
            job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)
