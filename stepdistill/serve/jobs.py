"""The routes' way to the model: jobs submitted to the batcher, waited for with a deadline
and a check for a client that went away, and the request limits every route applies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request

from ..student import Student
from .batching import Batcher, Expired, QueueFull, ShuttingDown
from .errors import ApiError, is_valid_text
from .settings import ServeSettings


class Jobs:
    """One server's model calls: ``predict`` (labels, rationales) and ``complete``
    (continuations of a plain model), batched across concurrent requests."""

    def __init__(self, student: Student, settings: ServeSettings) -> None:
        self.student, self.settings = student, settings

        def runner(key: Any, items: list[Any]) -> list[Any]:
            kind, option = key
            if kind == "predict":
                return student.predict(items, rationale=option)
            return student.complete(items, option)

        self.batcher = Batcher(
            runner,
            enabled=settings.dynamic_batching,
            wait_ms=settings.batch_wait_ms,
            max_batch_items=settings.max_batch_items,
            max_queue=settings.max_queue,
            max_queue_items=settings.max_queue_inputs,
            max_queue_size=settings.max_queue_chars,
        )

    def _timeout(self) -> ApiError:
        seconds = self.settings.request_timeout_s
        return ApiError(504, f"no answer within {seconds:g} s; retry later", "timeout")

    async def run(self, kind: str, option: Any, items: list[Any], request: Request) -> list[Any]:
        deadline = time.monotonic() + self.settings.request_timeout_s
        try:
            future = self.batcher.submit(
                (kind, option), items, size=sum(len(str(i)) for i in items), deadline=deadline
            )
        except (QueueFull, ShuttingDown) as error:
            raise ApiError(503, str(error), "server_busy") from None
        waiting = asyncio.wrap_future(future)
        try:
            # Poll for a client that went away: its job is then dropped before the model
            # runs it (a non-streaming handler is not cancelled by the server on its own).
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=0.25)
                if done:
                    break
                if await request.is_disconnected():
                    raise ApiError(499, "client disconnected", "client_closed_request")
                if time.monotonic() > deadline:
                    raise self._timeout()
            return waiting.result()
        except Expired:
            raise self._timeout() from None
        except ShuttingDown as error:
            raise ApiError(503, str(error), "server_busy") from None
        finally:
            future.cancel()  # unrun: dropped; running or done: no effect

    def check_length(self, texts: list[str], what: str) -> None:
        limits = self.settings
        for index, text in enumerate(texts):
            if not is_valid_text(text):
                raise ApiError(
                    400,
                    f"{what} {index} holds a lone UTF-16 surrogate (an invalid \\u escape); send valid Unicode text",
                    param=what,
                )
        if len(texts) > limits.max_inputs:
            raise ApiError(
                400,
                f"{len(texts)} {what}s in one request; the limit is {limits.max_inputs}",
                param=what,
            )
        for index, text in enumerate(texts):
            if len(text) > limits.max_input_chars:
                raise ApiError(
                    413,
                    f"{what} {index} has {len(text)} characters; the limit is {limits.max_input_chars}",
                    param=what,
                )

    def token_budget(self, requested: int | None, default: int) -> int:
        limit = self.settings.max_tokens
        budget = requested if requested is not None else min(default, limit)
        if budget > limit:
            raise ApiError(
                400,
                f"max_tokens {budget} is above this server's limit of {limit}",
                param="max_tokens",
            )
        return budget

    async def answer(
        self, prompts: list[str], max_tokens: int | None, default_tokens: int, request: Request
    ) -> list[tuple[str, str]]:
        """(text, finish_reason) per prompt: the student's label for a run, a continuation otherwise."""
        if self.student.is_run:
            predictions = await self.run("predict", False, prompts, request)
            return [(p.label or p.raw, "stop") for p in predictions]
        budget = self.token_budget(max_tokens, default_tokens)
        texts = await self.run("complete", budget, prompts, request)
        return [
            (text, "length" if self.student.count_tokens(text) >= budget else "stop")
            for text in texts
        ]
