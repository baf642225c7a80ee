"""The OpenAI-compatible routes: ``/v1/completions`` and ``/v1/chat/completions``, their
request bodies, stop sequences, usage counts and SSE streaming."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from ..student import Student
from .errors import ApiError, is_valid_text
from .jobs import Jobs


class _OpenAIRequest(BaseModel):
    # Clients send many optional fields (user, seed, top_p ...); unknown ones are ignored.
    model_config = ConfigDict(extra="ignore")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    stream: StrictBool = False
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="only n=1 is supported")
    temperature: float | None = Field(None, ge=0, le=2)
    stream_options: dict[str, Any] | None = None


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(
                str(part.get("text", "")) for part in self.content if part.get("type") == "text"
            )
        return self.content or ""


class ChatRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


def add_openai_routes(app: FastAPI, jobs: Jobs, name: str) -> None:
    """``/v1/completions`` and ``/v1/chat/completions`` on ``app``: for a run the prompt (or
    the last user message) is the task input and the answer its label; for a plain model a
    greedy continuation (chat through the tokenizer's chat template)."""

    @app.post("/v1/completions", response_model=None)
    async def completions(
        body: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt must not be empty", param="prompt")
        jobs.check_length(prompts, "prompt")
        check_stop(body.stop)
        results = [
            cut_at_stop(text, reason, body.stop)
            for text, reason in await jobs.answer(prompts, body.max_tokens, 16, request)
        ]
        ident, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        usage = make_usage(jobs.student, prompts, [text for text, _ in results])
        if body.stream:
            return sse(
                completion_chunks(ident, now, name, results, usage if include_usage(body) else None)
            )
        choices = [
            {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
            for i, (text, reason) in enumerate(results)
        ]
        return JSONResponse(
            {
                "id": ident,
                "object": "text_completion",
                "created": now,
                "model": name,
                "choices": choices,
                "usage": usage,
            }
        )

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: Request) -> JSONResponse | StreamingResponse:
        if jobs.student.is_run:
            # The student answers one task input: the last user message.
            users = [m.text() for m in body.messages if m.role == "user"]
            if not users:
                raise ApiError(
                    400, "messages must contain a user message (the task input)", param="messages"
                )
            prompt = users[-1]
        else:
            prompt = jobs.student.chat_prompt(
                [{"role": m.role, "content": m.text()} for m in body.messages]
            )
        jobs.check_length([prompt], "message")
        check_stop(body.stop)
        requested = body.max_completion_tokens or body.max_tokens
        [(text, reason)] = [
            cut_at_stop(t.strip(), r, body.stop)
            for t, r in await jobs.answer([prompt], requested, 256, request)
        ]
        ident, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage = make_usage(jobs.student, [prompt], [text])
        if body.stream:
            return sse(
                chat_chunks(ident, now, name, text, reason, usage if include_usage(body) else None)
            )
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": reason, "logprobs": None}
        return JSONResponse(
            {
                "id": ident,
                "object": "chat.completion",
                "created": now,
                "model": name,
                "choices": [choice],
                "usage": usage,
            }
        )


def check_stop(stop: str | list[str] | None) -> None:
    stops = [stop] if isinstance(stop, str) else stop or []
    if not all(is_valid_text(s) for s in stops):
        raise ApiError(400, "stop holds a lone UTF-16 surrogate", param="stop")


def cut_at_stop(text: str, reason: str, stop: str | list[str] | None) -> tuple[str, str]:
    """Cut at the first stop sequence (applied after generation)."""
    stops = [stop] if isinstance(stop, str) else stop or []
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[: min(cuts)], "stop") if cuts else (text, reason)


def make_usage(student: Student, prompts: list[str], texts: list[str]) -> dict[str, int]:
    prompt_tokens = sum(student.count_tokens(p) for p in prompts)
    completion_tokens = sum(student.count_tokens(t) for t in texts)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def include_usage(body: _OpenAIRequest) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


def pieces(text: str) -> list[str]:
    """The answer in word-sized pieces for streaming (each keeps its leading space)."""
    return re.findall(r"\s*\S+|\s+$", text) or [text]


def sse(events: Iterator[dict[str, Any]]) -> StreamingResponse:
    def lines() -> Iterator[str]:
        for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


def chat_chunks(
    ident: str, now: int, model: str, text: str, reason: str, usage: dict[str, int] | None
) -> Iterator[dict[str, Any]]:
    head = {"id": ident, "object": "chat.completion.chunk", "created": now, "model": model}
    yield {
        **head,
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        ],
    }
    for piece in pieces(text) if text else []:
        yield {
            **head,
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
        }
    yield {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}
    if usage is not None:
        yield {**head, "choices": [], "usage": usage}


def completion_chunks(
    ident: str, now: int, model: str, results: list[tuple[str, str]], usage: dict[str, int] | None
) -> Iterator[dict[str, Any]]:
    head = {"id": ident, "object": "text_completion", "created": now, "model": model}
    for index, (text, reason) in enumerate(results):
        for piece in pieces(text) if text else []:
            yield {
                **head,
                "choices": [
                    {"index": index, "text": piece, "finish_reason": None, "logprobs": None}
                ],
            }
        yield {
            **head,
            "choices": [{"index": index, "text": "", "finish_reason": reason, "logprobs": None}],
        }
    if usage is not None:
        yield {**head, "choices": [], "usage": usage}
