"""An API key never leaks: with the key variables set to a fresh random string, the real
CLI annotates (openai backend, a loopback server that even echoes the key back in its
errors), trains on what it wrote, and serves the result behind the same key as bearer
token. The key is then looked for, raw, base64- and URL-encoded, in every file under
the work folders, every captured stdout / stderr line, and every reply of the server,
including its error replies."""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from reliability_helpers import (
    annotate_toy,
    child_env,
    finish,
    make_train_task,
    output_of,
    start_cli,
)
from serve_helpers import wait_until_healthy
from teacher_helpers import toy_answer
from tiny_run import train_command


def forms(key: str) -> list[bytes]:
    """The key as it could end up written: raw, in base64 (alone or in a Basic header) or URL-quoted."""
    raw = key.encode()
    return [
        raw,
        base64.b64encode(raw),
        base64.b64encode(b"Bearer " + raw)[8:],
        urllib.parse.quote(key).encode(),
    ]


def leaks(data: bytes, key: str) -> bool:
    return any(form in data for form in forms(key))


@contextmanager
def echoing_server(key: str):
    """An OpenAI-compatible completions endpoint that accepts ``key``, answers the toy
    task, and on some prompts fails with an error that echoes the key it was sent
    (401 on "Is 1x even?", 500 on "Is 2x even?"), as careless servers do."""
    seen = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen["requests"] += 1
            sent = self.headers.get("Authorization", "")
            prompt = body["prompt"]
            number = int(re.findall(r"Is (\d+) even\?", prompt)[-1])
            if sent != f"Bearer {key}" or number in range(10, 20):
                self.reply(
                    401,
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {sent.removeprefix('Bearer ')}",
                            "type": "auth",
                        }
                    },
                )
            elif number in range(20, 30):
                self.reply(
                    500,
                    {
                        "error": {
                            "message": f"upstream failed for request with headers {dict(self.headers)}"
                        }
                    },
                )
            else:
                text = toy_answer(prompt)
                self.reply(
                    200,
                    {
                        "id": "c",
                        "object": "text_completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
                    },
                )

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_api_key_appears_in_no_file_log_or_error(tiny_causal, tmp_path):
    key = "sk-" + secrets.token_hex(20)
    env = child_env(OPENAI_API_KEY=key, STEPDISTILL_API_KEY=key)
    task = make_train_task(tmp_path, train_rows=32)  # questions "Is 10 even?" .. "Is 41 even?"
    annotations = tmp_path / "annotations"
    started = time.monotonic()

    with echoing_server(key) as (url, seen):
        process, _ = start_cli(
            [
                "annotate",
                "--task",
                str(task),
                "--teacher",
                "openai",
                "--model",
                "toy",
                "--base-url",
                url,
                "--output",
                str(annotations),
                "--concurrency",
                "4",
                "--option",
                "max_retries=1",
                "--option",
                "max_wait=0.01",
            ],
            tmp_path,
            env=env,
        )
        finish(process)
    summary = json.loads((annotations / "summary.json").read_text())
    failures = [
        (kind, count)
        for split in summary["splits"].values()
        for kind, count in split.get("failures", {}).items()
    ]
    assert (
        sum(count for _, count in failures) == 20
    )  # "Is 10 even?" .. "Is 29 even?", in train and valid
    assert {kind for kind, _ in failures} == {
        "AuthenticationError 401",
        "retries exhausted: InternalServerError 500",
    }
    rows = [
        json.loads(line)
        for split in ("train", "valid")
        for line in (annotations / f"{split}.jsonl").read_text().splitlines()
    ]
    errors = [row["error"] for row in rows if row.get("error")]
    assert len(errors) == 20 and all(key not in error for error in errors)

    # Train on what was written (rows that failed are skipped and counted).
    process, _ = start_cli(
        train_command(
            tiny_causal,
            annotations,
            tmp_path / "runs",
            task=task,
            run_name="secret-run",
            max_steps=2,
            batch_size=4,
            eval_limit=2,
            threads=1,
            max_rationale_tokens=4,
        ),
        tmp_path,
        env=env,
    )
    finish(process)
    run = tmp_path / "runs" / "secret-run"
    assert (run / "metrics.json").is_file()

    # Serve it behind the key (from $STEPDISTILL_API_KEY); good and failing requests.
    port = free_port()
    process, _ = start_cli(["serve", str(run), "--port", str(port)], tmp_path, env=env)
    base = f"http://127.0.0.1:{port}"
    replies = []
    try:
        assert wait_until_healthy(base, process) is None, output_of(process)
        bearer = {"Authorization": f"Bearer {key}"}
        attempts = [
            ("/v1/predict", {"inputs": ["Is 3 even?"]}, bearer, 200),
            (
                "/v1/chat/completions",
                {"model": "m", "messages": [{"role": "user", "content": "Is 3 even?"}]},
                bearer,
                200,
            ),
            ("/v1/predict", {"inputs": ["Is 3 even?"]}, {}, 401),
            (
                "/v1/predict",
                {"inputs": ["Is 3 even?"]},
                {"Authorization": f"Bearer {key[:-1]}"},
                401,
            ),
            ("/v1/predict", {"inputs": ["Is 3 even?"]}, {"Authorization": key}, 401),
            ("/v1/predict", {"inputs": [{"question": ["a list"]}]}, bearer, 400),
            ("/v1/predict", {"inputs": "not a list"}, bearer, 400),
            ("/v1/chat/completions", {"model": "m", "messages": []}, bearer, 400),
        ]
        for path, body, headers, status in attempts:
            response = httpx.post(base + path, json=body, headers=headers, timeout=60)
            assert response.status_code == status, (path, body, response.text)
            replies.append(
                response.content
                + b"".join(k.encode() + v.encode() for k, v in response.headers.items())
            )
        replies.append(
            httpx.post(
                base + "/v1/predict",
                content=b"{broken",
                headers={**bearer, "Content-Type": "application/json"},
            ).content
        )
    finally:
        process.terminate()
        process.wait(timeout=60)

    leaked_replies = [reply[:200] for reply in replies if leaks(reply, key)]
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    leaked_files = [
        str(path.relative_to(tmp_path)) for path in files if leaks(path.read_bytes(), key)
    ]
    logs = [path for path in files if path.suffix == ".log"]  # each CLI run's stdout + stderr
    lines = sum(len(path.read_text(errors="replace").splitlines()) for path in logs)
    assert (
        len(logs) == 3 and lines > 0 and leaks(f"x{key}y".encode(), key)
    )  # the check itself works
    assert leaked_replies == [] and leaked_files == []
    print(
        f"\nsecrets: a {len(key)}-character random key, {len(forms(key))} encodings; annotate ({seen['requests']} requests, "
        f"{len(errors)} failures whose server echoed the key), train, serve ({len(replies)} replies, "
        f"{sum(b'error' in r for r in replies)} errors): 0 in {len(files)} files, 0 in {lines} log lines, 0 in replies; "
        f"{time.monotonic() - started:.1f} s"
    )


def test_annotate_toy_helper_stores_no_key(tmp_path, monkeypatch):
    """The scripted-teacher path (no HTTP) writes no environment value either."""
    key = "sk-" + secrets.token_hex(20)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    output = annotate_toy(make_train_task(tmp_path), tmp_path / "annotations")
    assert not [p for p in Path(output).rglob("*") if p.is_file() and leaks(p.read_bytes(), key)]
