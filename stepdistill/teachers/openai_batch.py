"""Backend ``openai-batch``: the ``openai`` teacher through the OpenAI Batch API (half
the price, answers within 24 hours).

Every step is recorded in ``<folder>/batches.json`` (the annotation / response-store
folder; written atomically, never holding a key) before the next one starts, so a
process killed anywhere and run again resumes the same batch instead of paying twice:

1. the requests not covered by a batch already sent are written as Batch API JSONL
   (``batch-<sha>-input.jsonl``), one ``custom_id`` per example and sample
   (``batch_format.DEFAULT_CUSTOM_ID``: task, split, row, sample);
2. uploaded through the files API (purpose ``batch``): its file id is recorded;
3. a batch is created for it (``completion_window`` 24h): its id is recorded. A run
   killed between 2 and 3 first looks for a batch of that input file
   (``GET /v1/batches``) and creates one only if there is none;
4. the batch is polled, with a progress bar of its counts and status, until it is
   completed, failed, expired or cancelled;
5. its output and error files are downloaded (kept beside, for ``--teacher replay``) and
   joined to the requests by ``custom_id`` - output order is not input order.

Answers go to the response store as they are handed over (``store.CachingTeacher``), the
same rows a normal ``openai`` run stores: the identity is the ``openai`` one, so either
teacher reuses the other's answers. Requests that failed in the batch (a null response,
an ``error`` object, a non-200 status) are handed over as failures - counted and named
in the summary, put in a new batch by the next run - or, with ``retry_failed``, asked at
once on the normal API.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..cost import count_tokens
from ..io import atomic_write_text, write_json
from ..tasks import Task
from . import Completion, Request
from .batch_format import (
    DEFAULT_CUSTOM_ID,
    TERMINAL,
    BatchResult,
    custom_id,
    parse_lines,
)
from .openai import CHARS_PER_TOKEN_MAX, OpenAITeacher, describe, is_retryable
from .store import canonical, prompt_sha

STATE = "batches.json"
STATE_VERSION = 1
MAX_FILE_BYTES = 190_000_000
"""Largest input file we upload (the API takes 200 MB): more requests make more batches."""


class BatchAnswers:
    """The completions of one ``complete`` call (an iterator). ``finish()``: start nothing
    more (no new wait, no retry) and yield the answers already downloaded - they are paid
    for; ``close()``: stop."""

    def __init__(self) -> None:
        self.draining = False
        self.generator: Iterator[Completion] = iter(())

    def __iter__(self) -> BatchAnswers:
        return self

    def __next__(self) -> Completion:
        return next(self.generator)

    def finish(self) -> Iterator[Completion]:
        self.draining = True
        yield from self.generator

    def close(self) -> None:
        self.draining = True
        self.generator.close()  # type: ignore[attr-defined]


class OpenAIBatchTeacher(OpenAITeacher):
    """The ``openai`` teacher, asked through ``/v1/files`` and ``/v1/batches``."""

    batch = True

    def __init__(
        self,
        task: Task,
        model: str,
        poll_interval: float = 30.0,
        retry_failed: bool = False,
        completion_window: str = "24h",
        max_batch_requests: int = 50_000,
        custom_id: str = DEFAULT_CUSTOM_ID,
        **options: Any,
    ):
        known = set(inspect.signature(OpenAITeacher).parameters) - {"task", "model"}
        unknown = sorted(set(options) - known)
        if unknown:
            mine = {"poll_interval", "retry_failed", "completion_window", "max_batch_requests"}
            raise ValueError(
                f"teacher openai-batch: unknown option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known | mine | {'custom_id', 'model'}))}"
            )
        super().__init__(task, model, **options)
        self.name = "openai-batch"
        self.poll_interval = float(poll_interval)
        """Seconds between two looks at a batch's status."""
        self.retry_failed = bool(retry_failed)
        """Ask the requests that failed in a batch again at once, on the normal API."""
        self.completion_window = completion_window
        self.max_batch_requests = int(max_batch_requests)
        self.custom_id = custom_id
        self.endpoint = "/v1/chat/completions" if self.style == "chat" else "/v1/completions"
        self.created: list[str] = []
        """Ids of the batches this process created (for the summary)."""
        self.resumed: list[str] = []
        """Ids of batches sent by an earlier run, collected by this one."""
        self.unreadable: dict[str, int] = {}
        """Batch id -> lines of its output files that were not JSON (or had no custom_id)."""
        self._client: Any = None

    # The state file -------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        if self.folder is None:
            raise ValueError(
                "the openai-batch teacher keeps its batch ids in the annotation folder: "
                "run it through annotate (or set its folder)"
            )
        return Path(self.folder) / STATE

    def load_state(self) -> dict[str, Any]:
        path = self.state_path
        if not path.is_file():
            return {"version": STATE_VERSION, "batches": []}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}:{error.lineno}: batch state is not JSON ({error.msg}); it holds the ids "
                "of batches already paid for - repair it, or move it away to start over"
            ) from None
        if not isinstance(state, dict) or not isinstance(state.get("batches"), list):
            raise ValueError(f"{path}: not a batch state file (no 'batches' list)")
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        write_json(self.state_path, state)  # atomic: a kill leaves the old or the new file

    def account(self) -> dict[str, Any]:
        if not (self.created or self.resumed):
            return {}
        return {
            "batches_created": list(self.created),
            "batches_resumed": list(self.resumed),
            **({"unreadable_lines": dict(self.unreadable)} if self.unreadable else {}),
            "state": str(self.state_path),
        }

    # The interface ----------------------------------------------------------------------

    def cid(self, request: Request) -> str:
        example = request.example
        return custom_id(
            self.custom_id,
            self.task.name,
            example.source_split,
            example.source_index,
            request.sample,
        )

    def submit(self, requests: Sequence[Request]) -> None:
        """Send every request not covered by a batch yet (the run's whole work, all splits
        in one batch); ``complete`` collects them later."""
        self.check_key()
        self.tokenizer()
        state = self.load_state()
        self._plan(list(requests), state, retry_live=False)

    def complete(self, requests: Sequence[Request]) -> BatchAnswers:
        self.check_key()
        self.tokenizer()
        answers = BatchAnswers()
        answers.generator = self._collect(list(requests), answers)
        return answers

    # Planning: which batch answers which request --------------------------------------

    def _plan(
        self, requests: list[Request], state: dict[str, Any], retry_live: bool
    ) -> tuple[dict[str, list[Request]], list[Request]]:
        """Entry index -> its requests (batches sent before, and new ones sent now), and
        the requests to ask on the normal API (failed before, with ``retry_failed``).
        Requests that the budget cannot hold are in neither: not asked."""
        identity = canonical(self.identity)
        entries = state["batches"]
        mine = [canonical(entry["identity"]) == identity for entry in entries]
        handed = [set(entry.get("handed", ())) for entry in entries]
        failed = [set(entry.get("failed", ())) for entry in entries]
        covered: dict[str, list[Request]] = {}
        live: list[Request] = []
        fresh: list[Request] = []
        for request in requests:
            cid, sha = self.cid(request), prompt_sha(request.prompt)
            owner = None
            failed_before = False
            for index in range(len(entries) - 1, -1, -1):  # the newest batch first
                if not mine[index] or entries[index]["requests"].get(cid) != sha:
                    continue
                if cid not in handed[index]:
                    owner = str(index)
                    break
                failed_before = failed_before or cid in failed[index]
            if owner is not None:
                covered.setdefault(owner, []).append(request)
                # Already sent (paid for): held whatever the limits.
                self._hold(request, force=True)
            elif failed_before and retry_live:
                live.append(request)
            else:
                fresh.append(request)
        if fresh:
            # Each request's most is held before it is sent; from the first that cannot
            # fit, nothing more is sent (left for a later run: "not asked").
            chosen: list[Request] = []
            for request in fresh:
                if not self._hold(request):
                    break
                chosen.append(request)
            for group in self._chunks(chosen):
                index = self._send(group, state)
                covered[str(index)] = group
        return covered, live

    def _hold(self, request: Request, force: bool = False) -> bool:
        """Hold the request's most (its prompt and ``max_tokens``) in the budget, at batch
        prices; False when it cannot fit."""
        if self.budget is None:
            return True
        prompt_tokens = count_tokens(request.prompt, self._tokenizer)
        return bool(self.budget.reserve(request, prompt_tokens, self.max_tokens, force=force))

    def _chunks(self, requests: list[Request]) -> Iterator[list[Request]]:
        group: list[Request] = []
        size = 0
        for request in requests:
            line = len(json.dumps(self.request_body(request))) + 200
            if group and (len(group) >= self.max_batch_requests or size + line > MAX_FILE_BYTES):
                yield group
                group, size = [], 0
            group.append(request)
            size += line
        if group:
            yield group

    def _send(self, requests: list[Request], state: dict[str, Any]) -> int:
        """Write, upload and create one batch, recording each step; its entry's index."""
        lines = [
            json.dumps(
                {
                    "custom_id": self.cid(request),
                    "method": "POST",
                    "url": self.endpoint,
                    "body": self.request_body(request),
                },
                ensure_ascii=False,
            )
            for request in requests
        ]
        text = "".join(line + "\n" for line in lines)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        name = f"batch-{digest}-input.jsonl"
        atomic_write_text(Path(self.folder or ".") / name, text)
        entry = {
            "input": name,
            "input_file_id": None,
            "id": None,
            "identity": self.identity,
            "endpoint": self.endpoint,
            "requests": {self.cid(r): prompt_sha(r.prompt) for r in requests},
            "status": "written",
            "created": time.time(),
        }
        state["batches"].append(entry)
        self.save_state(state)
        self._ensure_sent(entry, state)
        return len(state["batches"]) - 1

    def _ensure_sent(self, entry: dict[str, Any], state: dict[str, Any]) -> None:
        """Upload the entry's file and create its batch, whichever is not done yet."""
        client = self.client()
        if not entry.get("input_file_id"):
            path = Path(self.folder or ".") / entry["input"]
            uploaded = client.files.create(
                file=(path.name, path.read_bytes(), "application/jsonl"), purpose="batch"
            )
            entry["input_file_id"] = uploaded.id
            entry["status"] = "uploaded"
            self.save_state(state)
        if not entry.get("id"):
            found = self._find_batch(entry["input_file_id"])
            batch = found or client.batches.create(
                input_file_id=entry["input_file_id"],
                endpoint=entry["endpoint"],
                completion_window=self.completion_window,
                metadata={"stepdistill_task": self.task.name[:500]},
            )
            entry["id"] = batch.id
            entry["status"] = batch.status
            self.save_state(state)
            (self.resumed if found else self.created).append(batch.id)

    def _find_batch(self, input_file_id: str) -> Any:
        """A batch already created for this input file (by a run killed before it could
        record the id), or None."""
        for seen, batch in enumerate(self.client().batches.list(limit=100)):
            if getattr(batch, "input_file_id", None) == input_file_id:
                return batch
            if seen >= 1000:
                break
        return None

    def client(self) -> Any:
        if self._client is None:
            import openai

            key = os.environ.get(self.api_key_env) or None
            self._client = openai.OpenAI(
                api_key=key or "EMPTY",
                base_url=self.base_url,
                max_retries=self.max_retries,
                timeout=self.timeout,
            )
        return self._client

    # Collecting ---------------------------------------------------------------------------

    def _collect(self, requests: list[Request], answers: BatchAnswers) -> Iterator[Completion]:
        state = self.load_state()
        covered, live = self._plan(requests, state, retry_live=self.retry_failed)
        entries = state["batches"]
        for index in covered:
            entry = entries[int(index)]
            if entry.get("id") and entry["id"] not in self.created + self.resumed:
                self.resumed.append(entry["id"])
            self._ensure_sent(entry, state)
        failed: list[Completion] = []
        handed: dict[str, list[str]] = {}
        try:
            for index, completions in self._wait(covered, state, answers):
                for completion in completions:
                    if completion.error is not None and self.retry_failed:
                        failed.append(completion)
                    else:
                        yield completion
                    handed.setdefault(index, []).append(self.cid(completion.request))
            retry = [c.request for c in failed] + live
            if failed and answers.draining:
                yield from failed  # stopping: no retries, the failures are accounted
                retry = []
            if self.budget is not None:
                for request in retry:
                    # A failed batch request is not billed: its hold goes, and the retry
                    # holds its own at the normal price.
                    self.budget.release(request)
            if retry:
                now = OpenAITeacher.complete(self, retry)
                try:
                    yield from now
                finally:
                    now.close()
        finally:
            if handed:
                for index, cids in handed.items():
                    entry = entries[int(index)]
                    entry["handed"] = sorted(set(entry.get("handed", [])) | set(cids))
                self.save_state(state)
            if self._client is not None:
                self._client.close()
                self._client = None

    def _wait(
        self, covered: dict[str, list[Request]], state: dict[str, Any], answers: BatchAnswers
    ) -> Iterator[tuple[str, list[Completion]]]:
        """Poll the batches until each ends; yield (entry index, its completions) as each one does."""
        entries = state["batches"]
        pending = dict(covered)
        total = sum(len(entries[int(i)]["requests"]) for i in pending)
        bar = tqdm(total=total, desc="batch", unit="req", disable=self.quiet)
        progress: dict[str, tuple[int, int]] = {}
        try:
            while pending:
                if answers.draining:
                    return
                for index in list(pending):
                    entry = entries[int(index)]
                    batch = None if entry.get("done") else self._retrieve(entry["id"])
                    if batch is not None:
                        counts = getattr(batch, "request_counts", None)
                        done = int(getattr(counts, "completed", 0) or 0)
                        bad = int(getattr(counts, "failed", 0) or 0)
                        progress[index] = (done + bad, bad)
                        entry["status"] = batch.status
                        bar.set_description_str(f"batch {batch.status}", refresh=False)
                    if entry.get("done") or (batch is not None and batch.status in TERMINAL):
                        results = self._results(entry, batch, state)
                        progress[index] = (len(entry["requests"]), len(entry.get("failed", [])))
                        yield index, self._join(entry, pending.pop(index), results)
                bar.n = sum(n for n, _ in progress.values())
                bar.set_postfix(failed=sum(f for _, f in progress.values()), refresh=False)
                bar.refresh()
                if pending:
                    time.sleep(self.poll_interval)
        finally:
            bar.close()

    def _retrieve(self, batch_id: str) -> Any:
        """The batch's state, or None when the server could not say this time (retried at
        the next poll); a lasting error (401, 404) stops the run: rerun to resume."""
        try:
            return self.client().batches.retrieve(batch_id)
        except Exception as error:
            if is_retryable(error):
                return None
            key = os.environ.get(self.api_key_env) or None
            raise ValueError(
                f"batch {batch_id}: {describe(error, key)} (its id is kept in {self.state_path}; "
                "rerun to resume it)"
            ) from None

    def _results(
        self, entry: dict[str, Any], batch: Any, state: dict[str, Any]
    ) -> dict[str, BatchResult]:
        """custom_id -> result, from the output and error files (downloaded once, kept)."""
        folder = Path(self.folder or ".")
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", str(entry["id"]))[:100]
        if not entry.get("done"):
            for kind, file_id in (
                ("output", getattr(batch, "output_file_id", None)),
                ("errors", getattr(batch, "error_file_id", None)),
            ):
                if file_id:
                    content = self.client().files.content(file_id)
                    atomic_write_text(folder / f"batch-{safe}-{kind}.jsonl", content.text)
                    entry[kind] = f"batch-{safe}-{kind}.jsonl"
            errors = getattr(batch, "errors", None)
            messages = [
                f"{getattr(e, 'code', None) or 'error'}: {getattr(e, 'message', '')}"
                for e in (getattr(errors, "data", None) or [])
            ]
            entry["batch_errors"] = messages[:5]
            entry["status"] = batch.status
        results: dict[str, BatchResult] = {}
        unreadable: list[int] = []
        for kind in ("errors", "output"):  # a success beats a failure of the same id
            if entry.get(kind):
                path = folder / entry[kind]
                text = path.read_text(encoding="utf-8") if path.is_file() else ""
                for result in parse_lines(text, path, unreadable):
                    if result.custom_id in entry["requests"]:
                        if result.text is not None or result.custom_id not in results:
                            results[result.custom_id] = result
        entry["failed"] = sorted(
            cid
            for cid in entry["requests"]
            if results.get(cid) is None or results[cid].text is None
        )
        if unreadable:
            # Their requests have no result (failed); the summary says which lines.
            entry["unreadable_lines"] = unreadable[:20]
            self.unreadable[str(entry["id"])] = len(unreadable)
        entry["done"] = True
        self.save_state(state)
        return results

    def _join(
        self, entry: dict[str, Any], requests: list[Request], results: dict[str, BatchResult]
    ) -> list[Completion]:
        """One completion per request, found by custom_id (never by position)."""
        completions = []
        why = "; ".join(entry.get("batch_errors") or [])
        for request in requests:
            result = results.get(self.cid(request))
            if result is None:
                completions.append(
                    Completion(
                        request,
                        None,
                        error=f"batch failed: no result (batch {entry.get('status')}"
                        f"{f': {why}' if why else ''})",
                    )
                )
            elif result.text is None:
                completions.append(Completion(request, None, error=result.error))
            elif len(result.text) > self.max_tokens * CHARS_PER_TOKEN_MAX:
                completions.append(
                    Completion(
                        request,
                        None,
                        error=f"answer too long: {len(result.text)} characters for "
                        f"max_tokens={self.max_tokens}",
                        usage=result.usage,
                    )
                )
            else:
                usage = result.usage or self.counted_usage(request, result.text)
                completions.append(Completion(request, result.text, usage=usage))
        return completions
