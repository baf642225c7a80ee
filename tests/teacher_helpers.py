"""A toy task, a scripted teacher and a scripted OpenAI-compatible HTTP server with
fault injection, for the teacher tests (all offline, all in temporary folders)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from stepdistill.teachers import Completion, Request, Teacher

SECRET = "sk-test-SECRET-do-not-write-7f3a9c"

TOY_TASK = """\
name: toy
files: {train: toy.jsonl}
input_template: "{question}"
label_field: answer
labels: ["yes", "no"]
demonstrations:
  - {input: "Is 2 even?", rationale: "2 = 2 * 1 + 0, remainder 0.", label: "yes"}
  - {input: "Is 3 even?", rationale: "3 = 2 * 1 + 1, remainder 1.", label: "no"}
"""


def make_toy_task(folder: Path, count: int = 12) -> Path:
    """A task YAML and ``count`` labelled rows: "Is N even?"."""
    rows = [
        {"question": f"Is {n} even?", "answer": "yes" if n % 2 == 0 else "no"}
        for n in range(10, 10 + count)
    ]
    (folder / "toy.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = folder / "toy.yaml"
    path.write_text(TOY_TASK)
    return path


def toy_answer(prompt: str) -> str:
    """The scripted model: reasons about the last question; wrong on multiples of 5
    (so that filtering has something to drop)."""
    number = int(re.findall(r"Is (\d+) even\?", prompt)[-1])
    even = number % 2 == 0
    if number % 5 == 0:
        even = not even
    return f" {number} = 2 * {number // 2} + {number % 2}, remainder {number % 2}. So the answer is {'yes' if even else 'no'}."


class ScriptedTeacher(Teacher):
    """Answers with ``toy_answer``; counts the prompts it was asked."""

    def __init__(self, model: str = "scripted", temperature: float = 0.0):
        self.name = "scripted"
        self.identity = {"backend": "scripted", "model": model, "temperature": temperature}
        self.temperature = temperature
        self.asked: Counter[str] = Counter()

    def complete(self, requests: Sequence[Request]) -> Iterator[Completion]:
        for request in requests:
            self.asked[request.prompt] += 1
            text = toy_answer(request.prompt)
            yield Completion(
                request,
                text,
                usage={"prompt_tokens": len(request.prompt) // 4, "completion_tokens": 10},
            )


def prompt_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


@dataclass
class ServerState:
    """What the server saw: requests per prompt, and the faults it injected."""

    attempts: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    headers_seen: list[str] = field(default_factory=list)
    seeds: Counter = field(default_factory=Counter)
    times: dict = field(default_factory=dict)  # prompt -> arrival times of its attempts
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (prompt, attempt number) -> fault name or None.
    plan: Callable[[str, int], str | None] = lambda prompt, attempt: None
    delay: float = 0.0


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every response.
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def send(
            self,
            status: int,
            body: bytes,
            headers: dict[str, str] | None = None,
            length: int | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - the http.server name
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with state.lock:
                state.headers_seen.append(str(self.headers.get("Authorization")))
                state.seeds[body.get("seed")] += 1
            if self.headers.get("Authorization") != f"Bearer {SECRET}":
                self.send(
                    401, json.dumps({"error": {"message": "bad key", "type": "auth"}}).encode()
                )
                return
            chat = self.path.endswith("/chat/completions")
            prompt = body["messages"][-1]["content"] if chat else body["prompt"]
            with state.lock:
                state.attempts[prompt] += 1
                state.times.setdefault(prompt, []).append(time.monotonic())
                fault = state.plan(prompt, state.attempts[prompt])
                if fault:
                    state.faults[fault] += 1
            if state.delay:
                time.sleep(state.delay)
            if fault == "429-retry-after":
                self.send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.05"})
            elif fault == "429-retry-after-long":
                self.send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "0.4"})
            elif fault == "429":
                self.send(429, b'{"error": {"message": "slow down"}}')
            elif fault == "500":
                self.send(500, b'{"error": {"message": "boom"}}')
            elif fault == "malformed":
                self.send(200, b'{"choices": [ this is not json')
            elif fault == "truncated":
                # Promise more bytes than sent, then drop the connection.
                self.send(200, b'{"id": "x", "choi', length=400)
                self.close_connection = True
            elif fault == "trickle":
                # A valid answer sent a byte at a time, 0.1 s apart: no single read
                # waits long, so only a deadline on the whole attempt stops it.
                body = json.dumps(
                    {
                        "id": "x",
                        "object": "text_completion",
                        "created": 0,
                        "model": "m",
                        "choices": [{"index": 0, "text": " " * 200, "finish_reason": "stop"}],
                    }
                ).encode()
                self.send(200, b"", length=len(body))
                try:
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass
                self.close_connection = True
            elif fault == "huge-no-usage":
                text = "x" * 3_000_000  # a 3 MB answer and no usage
                choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                self.send(
                    200,
                    json.dumps(
                        {
                            "id": "x",
                            "object": "text_completion",
                            "created": 0,
                            "model": "m",
                            "choices": [choice],
                        }
                    ).encode(),
                )
            elif fault == "slow":
                time.sleep(1.0)  # past the client's timeout
                self.send(500, b'{"error": {"message": "too late"}}')
            else:
                text = toy_answer(prompt)
                usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4}
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                choice = (
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                    if chat
                    else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                )
                response = {
                    "id": "cmpl-1",
                    "object": "chat.completion" if chat else "text_completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [choice],
                    "usage": usage,
                }
                self.send(200, json.dumps(response).encode())
                with state.lock:
                    state.answered[prompt] += 1

    return Handler


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served by a threaded HTTP server on a free loopback port: its base_url."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def scripted_server(state: ServerState | None = None) -> Iterator[tuple[str, ServerState]]:
    """A threaded OpenAI-compatible server on a free loopback port: (base_url, state)."""
    state = state or ServerState()
    with serving(_handler(state)) as url:
        yield url, state


def files_containing(folder: Path, needle: str) -> list[Path]:
    """Every file under ``folder`` whose bytes contain ``needle``."""
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and needle.encode() in path.read_bytes()
    ]
