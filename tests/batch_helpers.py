"""A scripted OpenAI Batch API on loopback: ``/v1/files`` (upload, content), ``/v1/batches``
(create, retrieve, list) and the normal ``/v1/completions`` / ``/v1/chat/completions``
(for retries). Batches finish after a few polls with their output shuffled and the
failures a plan asks for (an error object, a non-200 status, a null response, no line)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from teacher_helpers import SECRET, serving, toy_answer


def completion_body(body: dict, chat: bool) -> dict:
    """What the scripted model answers to one request body."""
    prompt = body["messages"][-1]["content"] if chat else body["prompt"]
    text = toy_answer(prompt)
    usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    choice = (
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if chat
        else {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
    )
    return {
        "id": "cmpl-1",
        "object": "chat.completion" if chat else "text_completion",
        "created": 0,
        "model": body["model"],
        "choices": [choice],
        "usage": usage,
    }


@dataclass
class BatchState:
    """What the server holds and saw."""

    files: dict = field(default_factory=dict)  # id -> (purpose, bytes)
    batches: dict = field(default_factory=dict)  # id -> batch object
    uploads: int = 0
    created: int = 0
    retrieves: Counter = field(default_factory=Counter)
    live: Counter = field(default_factory=Counter)  # prompts asked on the normal API
    headers_seen: set = field(default_factory=set)
    # custom_id -> None (answered) or "error" / "status" / "null" / "missing" / "garbage".
    plan: Callable[[str], str | None] = lambda custom_id: None
    polls: int = 2  # retrieves before a batch completes
    hold: bool = False  # never complete (a batch still running when the client is killed)
    status: str = "completed"  # the final status ("expired": the planned "missing" lines)
    seed: int = 0
    batch_created: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _finish(state: BatchState, batch: dict) -> None:
    """Run a batch: the output and error files, the output in shuffled order."""
    _, data = state.files[batch["input_file_id"]]
    output, errors = [], []
    for number, line in enumerate(data.decode().splitlines()):
        request = json.loads(line)
        cid = request["custom_id"]
        fault = state.plan(cid)
        base = {"id": f"batch_req_{number}", "custom_id": cid}
        if fault == "missing":
            continue
        if fault == "garbage":  # a torn line in place of this request's result
            output.append({"torn": '{"custom_id": "' + cid + '", "resp'})
            continue
        if fault == "error":
            errors.append(
                {**base, "response": None, "error": {"code": "server_error", "message": "boom"}}
            )
        elif fault == "status":
            body = {"error": {"message": "bad request", "type": "invalid_request_error"}}
            output.append({**base, "response": {"status_code": 400, "body": body}, "error": None})
        elif fault == "null":
            output.append({**base, "response": None, "error": None})
        else:
            body = completion_body(request["body"], request["url"].endswith("/chat/completions"))
            response = {"status_code": 200, "request_id": f"req_{number}", "body": body}
            output.append({**base, "response": response, "error": None})
    random.Random(state.seed).shuffle(output)
    for kind, rows in (("output_file_id", output), ("error_file_id", errors)):
        if rows:
            file_id = f"file-{kind[:3]}-{batch['id']}"
            content = "".join(
                (row["torn"] if "torn" in row else json.dumps(row)) + "\n" for row in rows
            ).encode()
            state.files[file_id] = ("batch_output", content)
            batch[kind] = file_id
    batch["status"] = state.status
    batch["request_counts"] = {
        "total": len(data.decode().splitlines()),
        "completed": len(
            [r for r in output if (r.get("response") or {}).get("status_code") == 200]
        ),
        "failed": len(errors)
        + len([r for r in output if r.get("response") is None])
        + len([r for r in output if (r.get("response") or {}).get("status_code", 200) != 200]),
    }


def _handler(state: BatchState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: object) -> None:
            pass

        def send(self, status: int, value: object, raw: bytes | None = None) -> None:
            body = raw if raw is not None else json.dumps(value).encode()
            self.send_response(status)
            self.send_header(
                "Content-Type",
                "application/octet-stream" if raw is not None else "application/json",
            )
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def authorized(self) -> bool:
            header = str(self.headers.get("Authorization"))
            with state.lock:
                state.headers_seen.add(header)
            if header != f"Bearer {SECRET}":
                self.send(401, {"error": {"message": "bad key", "type": "auth"}})
                return False
            return True

        def do_GET(self) -> None:  # noqa: N802
            if not self.authorized():
                return
            path = self.path.split("?")[0]
            parts = path.strip("/").split("/")  # v1, files|batches, id, content
            with state.lock:
                if parts[1] == "files" and len(parts) == 4 and parts[3] == "content":
                    if parts[2] not in state.files:
                        return self.send(404, {"error": {"message": "no such file"}})
                    return self.send(200, None, raw=state.files[parts[2]][1])
                if parts[1] == "batches" and len(parts) == 3:
                    batch = state.batches.get(parts[2])
                    if batch is None:
                        return self.send(404, {"error": {"message": "no such batch"}})
                    state.retrieves[parts[2]] += 1
                    if batch["status"] == "validating":
                        batch["status"] = "in_progress"
                    elif (
                        batch["status"] == "in_progress"
                        and not state.hold
                        and state.retrieves[parts[2]] >= state.polls
                    ):
                        _finish(state, batch)
                    return self.send(200, batch)
                if parts[1] == "batches" and len(parts) == 2:
                    data = sorted(state.batches.values(), key=lambda b: -b["created_at"])
                    return self.send(200, {"object": "list", "data": data, "has_more": False})
            self.send(404, {"error": {"message": f"no route {path}"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            data = self.rfile.read(length)
            if not self.authorized():
                return
            path = self.path.split("?")[0]
            if path.endswith("/files"):
                message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                    b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + data
                )
                fields = {
                    part.get_param("name", header="content-disposition"): part.get_payload(
                        decode=True
                    )
                    for part in message.iter_parts()
                }
                with state.lock:
                    state.uploads += 1
                    file_id = f"file-in-{state.uploads}"
                    state.files[file_id] = (fields["purpose"].decode(), fields["file"])
                return self.send(
                    200,
                    {
                        "id": file_id,
                        "object": "file",
                        "bytes": len(fields["file"]),
                        "created_at": int(time.time()),
                        "filename": "input.jsonl",
                        "purpose": fields["purpose"].decode(),
                        "status": "processed",
                    },
                )
            body = json.loads(data)
            if path.endswith("/batches"):
                with state.lock:
                    if state.files.get(body["input_file_id"], ("",))[0] != "batch":
                        return self.send(400, {"error": {"message": "not a batch file"}})
                    state.created += 1
                    batch_id = f"batch_{state.created}"
                    batch = {
                        "id": batch_id,
                        "object": "batch",
                        "endpoint": body["endpoint"],
                        "input_file_id": body["input_file_id"],
                        "completion_window": body["completion_window"],
                        "status": "validating",
                        "created_at": int(time.time()) + state.created,
                        "request_counts": {"total": 0, "completed": 0, "failed": 0},
                        "metadata": body.get("metadata"),
                    }
                    state.batches[batch_id] = batch
                state.batch_created.set()
                return self.send(200, batch)
            chat = path.endswith("/chat/completions")
            prompt = body["messages"][-1]["content"] if chat else body["prompt"]
            with state.lock:
                state.live[prompt] += 1
            self.send(200, completion_body(body, chat))

    return Handler


@contextmanager
def batch_server(state: BatchState | None = None) -> Iterator[tuple[str, BatchState]]:
    """The scripted Batch API on a free loopback port: (base_url, state)."""
    state = state or BatchState()
    with serving(_handler(state)) as url:
        yield url, state
