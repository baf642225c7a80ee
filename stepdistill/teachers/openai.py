"""Backend ``openai``: any OpenAI-compatible endpoint (OpenAI, vLLM, SGLang, llama.cpp
server, Ollama, ``stepdistill serve``), chat or completions style.

Requests run concurrently on an asyncio loop in a worker thread (a semaphore bounds
the number in flight; optional requests- and tokens-per-minute limits pace them), and
completions are handed back to the caller as each one arrives, so the caching wrapper
commits every answer at once. The client's own retries are off: ``tenacity`` retries
429, 5xx, timeouts, dropped connections and malformed bodies with exponential backoff
and jitter, waiting what ``Retry-After`` asks for when the server says.

The API key is read from an environment variable and is never part of the cache key,
the teacher's identity, a log line or an error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..cost import count_tokens
from ..tasks import Task
from . import Completion, Request, Teacher

STYLES = ("chat", "completions")
MAX_RETRY_AFTER = 600.0  # seconds: a longer Retry-After is a server bug, not a plan
CHARS_PER_TOKEN_MAX = 32
"""An answer longer than ``max_tokens`` x this many characters cannot be ``max_tokens``
tokens: it is refused (a hostile or broken server), not stored or counted at its length."""


class RateLimiter:
    """At most ``per_minute`` units a minute: a token bucket refilled continuously."""

    def __init__(self, per_minute: float):
        self.capacity = float(per_minute)
        self.available = float(per_minute)
        self.updated = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)  # one oversized request must still pass
        async with self.lock:
            while True:
                now = time.monotonic()
                self.available = min(
                    self.capacity, self.available + (now - self.updated) * self.capacity / 60
                )
                self.updated = now
                if self.available >= amount:
                    self.available -= amount
                    return
                await asyncio.sleep((amount - self.available) * 60 / self.capacity)


def retry_after_seconds(error: BaseException) -> float | None:
    """The wait a 429 / 503 asks for (``Retry-After``: seconds or an HTTP date)."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class MalformedResponse(Exception):
    """A 200 whose body is not a usable completion (bad JSON, no choices)."""


def is_retryable(error: BaseException) -> bool:
    import openai

    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    # Timeouts (the client's per read, ours per attempt) and dropped connections; a body
    # that is not JSON or not a completion.
    return isinstance(
        error,
        TimeoutError
        | openai.APIConnectionError
        | openai.APIResponseValidationError
        | MalformedResponse
        | ValueError,
    )


def describe(error: BaseException, secret: str | None) -> str:
    """``Kind: message`` for the failure account, with the key scrubbed just in case."""
    status = getattr(error, "status_code", None)
    message = " ".join(str(error).split())[:300]
    text = f"{type(error).__name__}{f' {status}' if status else ''}: {message}"
    return text.replace(secret, "***") if secret else text


class Answers:
    """The completions of one ``complete`` call, handed over from the worker thread."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Completion | BaseException | None] = queue.Queue()
        self.draining = threading.Event()  # start no new request
        self.cancelled = threading.Event()  # and abandon those in flight
        self.thread: threading.Thread | None = None
        self.done = False

    def __iter__(self) -> Answers:
        return self

    def __next__(self) -> Completion:
        if self.done:
            raise StopIteration
        item = self.queue.get()
        if item is None:
            self.done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item  # the loop itself failed (not one request): say so
        return item

    def finish(self) -> Iterator[Completion]:
        """Start nothing more; yield the answers of the requests already in flight."""
        self.draining.set()
        while not self.done:
            item = self.queue.get()
            if item is None:
                self.done = True
            elif not isinstance(item, BaseException):
                yield item

    def close(self) -> None:
        """Start nothing more and cancel what is in flight."""
        self.draining.set()
        self.cancelled.set()
        if self.thread is not None:
            self.thread.join()
        self.done = True


class OpenAITeacher(Teacher):
    """An OpenAI-compatible endpoint as a teacher."""

    def __init__(
        self,
        task: Task,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        style: str = "completions",
        temperature: float = 0.0,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        concurrency: int = 8,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        timeout: float = 60.0,
        deadline: float = 600.0,
        max_retries: int = 6,
        max_wait: float = 60.0,
        system: str | None = None,
        seed: int | None = 0,
        tokenizer: str | None = None,
    ):
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, not {style!r}")
        self.name = "openai"
        self.task = task
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.style = style
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        # The task's cut markers stop the model before it invents the next example
        # (the API accepts at most four).
        self.stop = list(stop if stop is not None else task.parser.cut_at)[:4]
        self.concurrency = int(concurrency)
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.timeout = float(timeout)
        """Seconds one attempt may take in all (not per read: a server sending a byte a
        second is cut off at this time)."""
        self.deadline = float(deadline)
        """Seconds one request may take with all its retries and waits."""
        self.budget: Any = None
        """A ``cost.Budget`` (set by annotate): requests start only while it allows."""
        self.max_retries = int(max_retries)
        self.max_wait = float(max_wait)
        self.system = system
        # With sampling, request k sends seed + k: samples differ from each other and a
        # rerun draws the same ones (where the server honours seeds).
        self.seed = seed
        self.tokenizer_name = tokenizer
        self._tokenizer: Any = None
        self.retries = 0

    @property
    def identity(self) -> dict[str, Any]:
        """What decides the output: no key, no endpoint (so a cache moves with the model)."""
        return {
            "backend": "openai",
            "model": self.model,
            "style": self.style,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            "system": self.system,
            "seed": self.seed if self.temperature > 0 else None,
        }

    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer named by ``tokenizer=`` (for estimates, and for
        servers that report no usage), or ``None``: then ~4 characters a token."""
        if self._tokenizer is None and self.tokenizer_name:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_name)
        return self._tokenizer

    def check_key(self) -> None:
        """Checked when asking, not when built: estimates and fully stored reruns need no key."""
        if self.base_url is None and not os.environ.get(self.api_key_env):
            raise ValueError(
                f"the {self.name} teacher needs an API key in ${self.api_key_env} (or a base_url of a local server)"
            )

    def request_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of one request (chat: ``messages``; completions: ``prompt``)."""
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.stop:
            body["stop"] = self.stop
        if self.seed is not None and self.temperature > 0:
            body["seed"] = self.seed + request.sample
        if self.style == "chat":
            body["messages"] = (
                [{"role": "system", "content": self.system}] if self.system else []
            ) + [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        return body

    def counted_usage(self, request: Request, text: str) -> dict[str, int]:
        """Token counts for a server that reports no usage, marked ``estimated`` without
        a tokenizer."""
        tokenizer = self._tokenizer  # loaded before the run; never load in the loop
        return {
            "prompt_tokens": count_tokens(request.prompt, tokenizer),
            # At most max_tokens: the server was asked for no more.
            "completion_tokens": min(count_tokens(text, tokenizer), self.max_tokens),
            **({} if tokenizer is not None else {"estimated": 1}),
        }

    def complete(self, requests: Sequence[Request]) -> Answers:
        """Completions as they arrive (an iterator). Stopping early: ``finish()`` lets the
        requests in flight end and returns their answers (they are paid for); ``close()``
        cancels them."""
        self.check_key()
        self.tokenizer()
        answers = Answers()
        loop = asyncio.new_event_loop()
        answers.thread = threading.Thread(
            target=self._run_loop, args=(loop, list(requests), answers), daemon=True
        )
        answers.thread.start()
        return answers

    def _run_loop(
        self, loop: asyncio.AbstractEventLoop, requests: list[Request], answers: Answers
    ) -> None:
        try:
            loop.run_until_complete(self._run(requests, answers))
        except BaseException as error:
            answers.queue.put(error)
        finally:
            loop.close()
            answers.queue.put(None)

    async def _run(self, requests: list[Request], answers: Answers) -> None:
        import openai

        key = os.environ.get(self.api_key_env) or None
        # Local servers accept any key; the client insists on one.
        client = openai.AsyncOpenAI(
            api_key=key or "EMPTY", base_url=self.base_url, max_retries=0, timeout=self.timeout
        )
        semaphore = asyncio.Semaphore(self.concurrency)
        rpm = RateLimiter(self.requests_per_minute) if self.requests_per_minute else None
        tpm = RateLimiter(self.tokens_per_minute) if self.tokens_per_minute else None
        tasks: set[asyncio.Task] = set()

        async def one(request: Request) -> None:
            try:
                if rpm:
                    await rpm.acquire()
                if tpm:
                    await tpm.acquire(len(request.prompt) / 4 + self.max_tokens)
                completion = await self._ask(client, request, key, answers.draining)
            finally:
                semaphore.release()
            answers.queue.put(completion)

        async def slot() -> bool:
            # Poll so that a consumer who stops (a budget reached) is noticed quickly
            # even while every slot waits on a slow request.
            while not answers.draining.is_set():
                try:
                    await asyncio.wait_for(semaphore.acquire(), timeout=0.2)
                    return True
                except TimeoutError:
                    continue
            return False

        try:
            for request in requests:
                if not await slot():
                    break
                if not await self._reserve(request, answers):
                    # Its most could pass a limit even with nothing else in flight:
                    # start nothing more. (Requests in flight are held at their most, so
                    # the limit holds.)
                    semaphore.release()
                    answers.draining.set()
                    break
                task = asyncio.create_task(one(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            while tasks and not answers.cancelled.is_set():
                await asyncio.wait(set(tasks), timeout=0.2)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()

    async def _reserve(self, request: Request, answers: Answers) -> bool:
        """Hold the request's most in the budget, waiting while requests in flight may
        still settle below their most; False once it cannot fit."""
        if self.budget is None:
            return True
        prompt_tokens = count_tokens(request.prompt, self._tokenizer)
        # live: priced at the normal rate even where the budget holds batch prices.
        while not self.budget.reserve(request, prompt_tokens, self.max_tokens, live=True):
            if self.budget.stopped is not None or answers.draining.is_set():
                return False
            await asyncio.sleep(0.02)
        return True

    async def _ask(
        self,
        client: Any,
        request: Request,
        key: str | None,
        draining: threading.Event | None = None,
    ) -> Completion:
        from tenacity import (
            AsyncRetrying,
            RetryError,
            retry_if_exception,
            stop_after_attempt,
            stop_any,
            wait_random_exponential,
        )

        backoff = wait_random_exponential(multiplier=0.5, max=self.max_wait)

        def wait(state: Any) -> float:
            error = state.outcome.exception() if state.outcome else None
            asked = retry_after_seconds(error) if error else None
            # Honour the server's Retry-After, plus a little jitter so that many
            # waiting requests do not all return in the same instant.
            # max_wait bounds our own backoff, not the server's word: retrying before
            # Retry-After only earns another 429.
            return (
                min(MAX_RETRY_AFTER, asked + backoff(state) * 0.1)
                if asked is not None
                else backoff(state)
            )

        def count_retry(state: Any) -> None:
            self.retries += 1

        try:
            async with asyncio.timeout(self.deadline):
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(is_retryable),
                    wait=wait,
                    # A stopped run (budget reached) lets a request finish but retries nothing.
                    stop=stop_any(
                        stop_after_attempt(self.max_retries + 1),
                        lambda _: draining is not None and draining.is_set(),
                    ),
                    before_sleep=count_retry,
                    reraise=False,
                ):
                    with attempt:
                        text, usage = await asyncio.wait_for(
                            self._call(client, request), self.timeout
                        )
            if len(text) > self.max_tokens * CHARS_PER_TOKEN_MAX:
                # Counted as the server reported it (or, estimated, at most max_tokens).
                return Completion(
                    request,
                    None,
                    error=f"answer too long: {len(text)} characters for max_tokens={self.max_tokens}",
                    usage=usage,
                )
            return Completion(request, text, usage=usage)
        except TimeoutError:
            return Completion(
                request, None, error=f"deadline: no answer within {self.deadline:g} s"
            )
        except RetryError as error:
            last = error.last_attempt.exception()
            return Completion(
                request,
                None,
                error=f"retries exhausted: {describe(last, key) if last else 'unknown'}",
            )
        except Exception as error:  # a 400, 401, 404 ...: not worth retrying
            return Completion(request, None, error=describe(error, key))

    async def _call(self, client: Any, request: Request) -> tuple[str, dict[str, int]]:
        body = self.request_body(request)
        if self.style == "chat":
            response = await client.chat.completions.create(**body)
            choices = getattr(response, "choices", None)
            text = choices[0].message.content if choices else None
        else:
            response = await client.completions.create(**body)
            choices = getattr(response, "choices", None)
            text = choices[0].text if choices else None
        if not isinstance(text, str):
            raise MalformedResponse(
                f"no completion text in the response ({type(response).__name__})"
            )
        usage = getattr(response, "usage", None)
        if usage is not None and getattr(usage, "prompt_tokens", None) is not None:
            counts = {
                "prompt_tokens": int(usage.prompt_tokens),
                "completion_tokens": int(usage.completion_tokens or 0),
            }
        else:
            # No usage reported (some servers): count, and say whether it is exact.
            counts = self.counted_usage(request, text)
        return text, counts
