"""Serve a student over HTTP: a task endpoint and an OpenAI-compatible API.

Routes (FastAPI + uvicorn):

- ``POST /v1/predict``  ``{"inputs": [...], "rationale": false}`` -> labels (and rationales);
- ``POST /v1/completions``, ``POST /v1/chat/completions`` (OpenAI-compatible, with SSE
  streaming). For a stepdistill run the prompt (or the last user message) is the task
  input and the answer is the student's label, so an app that asked an LLM can switch
  to the student by changing ``base_url``. For a plain HF model folder they are greedy
  continuations (chat through the tokenizer's chat template);
- ``GET /health`` (never needs the key), ``GET /v1/models``.

Concurrent requests share model calls through ``batching.Batcher``. Decoding is greedy
whatever ``temperature`` says, and streaming sends the answer in pieces once it is
generated (the student's answers are short; one batched call serves many streams).
Any model name is accepted in requests: the server has one model.

This module imports FastAPI at the top: it is the server backend, imported only by
``stepdistill serve`` and the tests. torch is loaded when the model is.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .data import DataError
from .request_batching import Batcher, Expired, QueueFull, ShuttingDown
from .student import Student

API_KEY_ENV = "STEPDISTILL_API_KEY"


@dataclass
class ServeSettings:
    """Limits and batching of one server."""

    api_key: str | None = None
    """Bearer token required on every route but /health; ``None`` leaves the API open."""
    model_name: str | None = None
    """Name reported by /v1/models and in responses (default: the run folder's name)."""
    max_body_bytes: int = 1_000_000
    """Larger request bodies are refused with 413 before they are parsed."""
    max_inputs: int = 64
    """Inputs (or prompts) per request."""
    max_input_chars: int = 20_000
    """Characters per formatted input, prompt or chat."""
    max_tokens: int = 512
    """Upper bound on ``max_tokens`` in OpenAI requests."""
    dynamic_batching: bool = True
    """Run concurrent requests together; off: one model call per request."""
    batch_wait_ms: float = 5.0
    """How long the worker waits for more requests before a model call."""
    max_batch_items: int = 64
    """Inputs per model call when batching."""
    max_queue: int = 1024
    """Requests waiting beyond this get 503."""
    max_queue_inputs: int = 8192
    """Inputs waiting (over all requests) beyond this get 503."""
    max_queue_chars: int = 32_000_000
    """Characters of input waiting (over all requests) beyond this get 503."""
    request_timeout_s: float = 120.0
    """A request not answered within this many seconds gets 504; if it is still waiting
    for the model it is dropped unrun (as is the request of a client that disconnects)."""
    header_timeout_s: float = 10.0
    """A connection that has not sent a complete request head this long after it opened
    (or after its last response) is closed: idle sockets cannot pile up."""
    body_timeout_s: float = 30.0
    """A request body not received within this many seconds gets 408."""
    keep_alive_s: float = 5.0
    """Idle keep-alive connections are closed after this many seconds."""
    max_connections: int = 1000
    """Connections and requests at once; beyond it uvicorn answers 503 (capped below the
    process's file-descriptor limit)."""
    shutdown_timeout_s: float = 5.0
    """On SIGTERM, requests still running after this many seconds are cancelled."""
    allow_public_without_key: bool = False
    """Serve on a non-loopback address without an API key (refused otherwise)."""


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: ``{"error": {"message", "type", ...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_response(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


# ---- request bodies -------------------------------------------------------------------


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[str | dict[str, Any]] = Field(min_length=1)
    """Formatted texts or records of the task's fields."""
    rationale: StrictBool = False


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


# ---- the app --------------------------------------------------------------------------


def create_app(student: Student, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``student`` (its worker thread starts now, stops at shutdown)."""
    settings = settings or ServeSettings()
    name = settings.model_name or student.name
    created = int(time.time())

    def runner(key: Any, items: list[Any]) -> list[Any]:
        kind, option = key
        if kind == "predict":
            return student.predict(items, rationale=option)
        return student.complete(items, option)

    batcher = Batcher(
        runner,
        enabled=settings.dynamic_batching,
        wait_ms=settings.batch_wait_ms,
        max_batch_items=settings.max_batch_items,
        max_queue=settings.max_queue,
        max_queue_items=settings.max_queue_inputs,
        max_queue_size=settings.max_queue_chars,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(title="stepdistill student", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.student = student
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message, error.kind, error.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation(error.errors()))

    @app.exception_handler(Exception)
    async def _crash(_: Request, error: Exception) -> JSONResponse:
        # A bug or a model failure: still an OpenAI-style body, and the server keeps running.
        return error_response(
            500, f"internal error ({type(error).__name__}); see the server log", "server_error"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(
            error.status_code,
            str(error.detail),
            "not_found_error" if error.status_code == 404 else "invalid_request_error",
        )

    async def run(kind: str, option: Any, items: list[Any], request: Request) -> list[Any]:
        deadline = time.monotonic() + settings.request_timeout_s
        try:
            future = batcher.submit(
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
                    raise ApiError(
                        504,
                        f"no answer within {settings.request_timeout_s:g} s; retry later",
                        "timeout",
                    )
            return waiting.result()
        except Expired:
            raise ApiError(
                504, f"no answer within {settings.request_timeout_s:g} s; retry later", "timeout"
            ) from None
        except ShuttingDown as error:
            raise ApiError(503, str(error), "server_busy") from None
        finally:
            future.cancel()  # unrun: dropped; running or done: no effect

    def check_length(texts: list[str], what: str) -> None:
        for index, text in enumerate(texts):
            if not is_valid_text(text):
                raise ApiError(
                    400,
                    f"{what} {index} holds a lone UTF-16 surrogate (an invalid \\u escape); send valid Unicode text",
                    param=what,
                )
        if len(texts) > settings.max_inputs:
            raise ApiError(
                400,
                f"{len(texts)} {what}s in one request; the limit is {settings.max_inputs}",
                param=what,
            )
        for index, text in enumerate(texts):
            if len(text) > settings.max_input_chars:
                raise ApiError(
                    413,
                    f"{what} {index} has {len(text)} characters; the limit is {settings.max_input_chars}",
                    param=what,
                )

    def token_budget(requested: int | None, default: int) -> int:
        budget = requested if requested is not None else min(default, settings.max_tokens)
        if budget > settings.max_tokens:
            raise ApiError(
                400,
                f"max_tokens {budget} is above this server's limit of {settings.max_tokens}",
                param="max_tokens",
            )
        return budget

    async def answer(
        prompts: list[str], max_tokens: int | None, default_tokens: int, request: Request
    ) -> list[tuple[str, str]]:
        """(text, finish_reason) per prompt: the student's label for a run, a continuation otherwise."""
        if student.is_run:
            predictions = await run("predict", False, prompts, request)
            return [(p.label or p.raw, "stop") for p in predictions]
        budget = token_budget(max_tokens, default_tokens)
        texts = await run("complete", budget, prompts, request)
        return [
            (text, "length" if student.count_tokens(text) >= budget else "stop") for text in texts
        ]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "stepdistill"}
            ],
        }

    @app.post("/v1/predict")
    async def predict(body: PredictRequest, request: Request) -> dict[str, Any]:
        try:
            texts = [student.format(item, f"inputs[{i}]") for i, item in enumerate(body.inputs)]
        except DataError as error:
            raise ApiError(400, str(error), param="inputs") from None
        check_length(texts, "input")
        if body.rationale:
            try:
                student.check_rationale()
            except ValueError as error:
                raise ApiError(400, str(error), param="rationale") from None
        predictions = await run("predict", body.rationale, texts, request)
        return {"model": name, "predictions": [p.as_dict() for p in predictions]}

    @app.post("/v1/completions", response_model=None)
    async def completions(
        body: CompletionRequest, request: Request
    ) -> JSONResponse | StreamingResponse:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(400, "prompt must not be empty", param="prompt")
        check_length(prompts, "prompt")
        check_stop(body.stop)
        results = [
            cut_at_stop(text, reason, body.stop)
            for text, reason in await answer(prompts, body.max_tokens, 16, request)
        ]
        ident, now = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        usage = make_usage(student, prompts, [text for text, _ in results])
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
        if student.is_run:
            # The student answers one task input: the last user message.
            users = [m.text() for m in body.messages if m.role == "user"]
            if not users:
                raise ApiError(
                    400, "messages must contain a user message (the task input)", param="messages"
                )
            prompt = users[-1]
        else:
            prompt = student.chat_prompt(
                [{"role": m.role, "content": m.text()} for m in body.messages]
            )
        check_length([prompt], "message")
        check_stop(body.stop)
        requested = body.max_completion_tokens or body.max_tokens
        [(text, reason)] = [
            cut_at_stop(t.strip(), r, body.stop)
            for t, r in await answer([prompt], requested, 256, request)
        ]
        ident, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        usage = make_usage(student, [prompt], [text])
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

    return app


# ---- helpers ---------------------------------------------------------------------------


def describe_validation(errors: Any) -> str:
    """One readable sentence from pydantic's error list (at most four problems)."""
    problems: dict[str, list[str]] = {}
    for error in errors:
        kind, loc = error.get("type"), [str(x) for x in error.get("loc", ())]
        if kind == "json_invalid":
            return f"request body is not valid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}"
        if loc == ["body"]:
            return (
                "request body is empty; send a JSON object"
                if kind == "missing"
                else "request body must be a JSON object"
            )
        # A union's errors carry the member type as the last part ('inputs.0.str'): fold them.
        if loc and (loc[-1] in _TYPE_TAGS or "[" in loc[-1]):
            loc = loc[:-1]
        where = ".".join(loc[1:] if loc[:1] == ["body"] else loc)
        if kind in ("missing", "extra_forbidden"):
            message = f"{'missing' if kind == 'missing' else 'unknown'} field '{where}'"
            where = message  # its own entry, never joined with "or"
        else:
            message = (
                f"'{where}': {error.get('msg', '')}"
                if not problems.get(where)
                else str(error.get("msg", ""))
            )
        if message not in problems.setdefault(where, []):
            problems[where].append(message)
    parts = [" or ".join(messages) for messages in problems.values()][:4]  # "or": a union's members
    return "invalid request: " + "; ".join(parts)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def is_valid_text(text: str) -> bool:
    """False for text with a lone surrogate ("\\ud800" is valid JSON but not Unicode
    text): the tokenizer fails on it, so it is refused with 400 before batching."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


class Guard:
    """ASGI middleware run before routing: the bearer token (all routes but /health)
    and the body size limit (the body is read here, so an oversized one is never parsed)."""

    def __init__(
        self, app: Any, api_key: str | None, max_body_bytes: int, body_timeout_s: float = 30.0
    ) -> None:
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if self.api_key and scope.get("path") != "/health":
            given = [v for k, v in scope.get("headers") or [] if k == b"authorization"]
            if len(given) > 1:  # which one counts would depend on the proxy: refuse both
                await error_response(
                    400, "more than one Authorization header", "authentication_error"
                )(scope, receive, send)
                return
            # Compared as bytes: a UTF-8 client sends a non-ASCII key as UTF-8 bytes.
            scheme, _, token = (given[0] if given else b"").partition(b" ")
            if scheme.lower() != b"bearer" or not token.strip():
                await error_response(
                    401,
                    "missing API key: send the header 'Authorization: Bearer <key>'",
                    "authentication_error",
                )(scope, receive, send)
                return
            if not hmac.compare_digest(token.strip(), self.api_key.encode("utf-8")):
                await error_response(401, "invalid API key", "authentication_error")(
                    scope, receive, send
                )
                return
        too_large = f"request body is larger than {self.max_body_bytes} bytes"
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await error_response(413, too_large)(scope, receive, send)
            return
        body, more = b"", True
        try:
            async with asyncio.timeout(self.body_timeout_s):  # a body sent a byte a second
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    if len(body) > self.max_body_bytes:
                        await error_response(413, too_large)(scope, receive, send)
                        return
        except TimeoutError:
            message = f"request body not received within {self.body_timeout_s:g} s"
            await error_response(408, message)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect as usual

        await self.app(scope, replay, send)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def uvicorn_config(app: Any, settings: ServeSettings, host: str, port: int = 0) -> Any:
    """uvicorn's settings for ``app``: bounded connections, idle sockets closed, a prompt
    shutdown (``serve`` and the tests use the same)."""
    import resource

    import uvicorn

    # More descriptors where the hard limit allows, and never more connections than
    # descriptors: past the limit uvicorn answers 503 instead of failing to accept.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
            soft = max(soft, wanted)
        except (ValueError, OSError):
            pass
    limit = max(8, min(settings.max_connections, soft - 64))
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        http=head_timeout_protocol(settings.header_timeout_s),
        limit_concurrency=limit,
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )


def head_timeout_protocol(seconds: float) -> type:
    """uvicorn's HTTP protocol, closing a connection that sends no complete request head
    within ``seconds`` of opening or of its last response (uvicorn times out only idle
    keep-alive connections, not one that never sends a request or trickles its head)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class Protocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def _arm_head_timer(self) -> None:
            waiting_after = self.cycle  # a new request head replaces the cycle

            def expire() -> None:
                if self.cycle is waiting_after and not self.transport.is_closing():
                    self.transport.close()

            self.loop.call_later(seconds, expire)

    return Protocol


def serve(
    path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings | None = None,
    threads: int | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    int8: bool = False,
) -> None:
    """Load the student at ``path`` (on ``device``: see ``Student.load``) and serve it
    until interrupted."""
    import uvicorn

    settings = settings or ServeSettings()
    if settings.api_key is None:
        settings.api_key = os.environ.get(API_KEY_ENV) or None
    if host not in LOOPBACK and not settings.api_key:
        if not settings.allow_public_without_key:
            raise ValueError(
                f"refusing to serve on {host} without an API key: anyone who can reach it could "
                f"use it. Set ${API_KEY_ENV} (or pass --allow-public-without-key)"
            )
        print(
            f"warning: serving on {host} without an API key: anyone who can reach it can use it",
            flush=True,
        )
    student = Student.load(path, threads=threads, batch_size=batch_size, device=device, int8=int8)
    app = create_app(student, settings)
    name = settings.model_name or student.name
    print(
        f"serving {name} ({'run' if student.is_run else 'model'}) on http://{host}:{port}  (auth: {'on' if settings.api_key else 'off'})",
        flush=True,
    )
    uvicorn.Server(uvicorn_config(app, settings, host, port)).run()
