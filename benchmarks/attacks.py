"""Rerun the attacks of issue 29 and print one line per attack with its figure.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/attacks.py            # all
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/attacks.py parse csv  # some

Server attacks run against the offline tiny test model (tests/conftest.py) served on
loopback with `stepdistill serve`'s own uvicorn settings; teacher attacks against the
tests' scripted OpenAI-compatible server. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(function, *args):
    start = time.perf_counter()
    try:
        result = function(*args)
    except Exception as error:  # noqa: BLE001 - the refusal is the figure
        result = f"{type(error).__name__}: {str(error).splitlines()[0][:90]}"
    return time.perf_counter() - start, result


def attack_parse() -> None:
    from stepdistill.parse import parse_continuation
    from stepdistill.tasks import load_task, task_from_dict

    svamp = load_task("svamp")
    for n in (500, 1_000, 2_000, 4_000, 100_000):
        seconds, parsed = timed(parse_continuation, "The answer is (3 + 4)" + " " * n + "x", svamp)
        print(
            f"parse: svamp pattern, 'The answer is (3 + 4)' + {n:,} spaces + 'x': {seconds:.4f} s"
        )
    user = task_from_dict(
        {"name": "t", "files": {"train": "t.jsonl"}, "parser": {"pattern": "(?P<label>(a|aa)+)$"}}
    )
    seconds, parsed = timed(parse_continuation, "a" * 60 + "b", user)
    print(f"parse: user pattern (a|aa)+$ on 61 characters: {seconds:.2f} s, status {parsed.status}")


def attack_csv() -> None:
    from stepdistill.data import read_records

    with tempfile.TemporaryDirectory() as folder:
        for columns in (40_000, 1_000_000):
            path = Path(folder) / "wide.csv"
            header = ",".join(f"c{i}" for i in range(columns))
            path.write_text(header + "\n" + ",".join("v" * columns) + "\n")
            seconds, rows = timed(lambda p: list(read_records(p)), path)
            print(f"csv: {columns:,} columns: {seconds:.2f} s")


def attack_files() -> None:
    from stepdistill.data import expand_braces, load_splits
    from stepdistill.tasks import load_task

    seconds, result = timed(expand_braces, "{data}/x_{0..99999999}.json")
    print(f"files: teacher_outputs range of 10^8 names: {seconds:.4f} s -> {result}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
        (root / "bomb.yaml").write_text(
            "\n".join(lines) + "\nname: t\nfiles: {train: t.jsonl}\ndemonstrations: *a8\n"
        )
        seconds, result = timed(load_task, root / "bomb.yaml")
        print(
            f"files: YAML alias bomb (10^9 strings) in demonstrations: {seconds:.4f} s -> {result}"
        )
        for name in ("../../etc/passwd", "/etc/passwd"):
            (root / "t.yaml").write_text(f"name: t\nfiles: {{train: {json.dumps(name)}}}\n")
            seconds, result = timed(load_splits, load_task(root / "t.yaml"))
            print(f"files: files: {name}: {result}")
        os.symlink("/etc/hostname", root / "link.jsonl")
        (root / "t.yaml").write_text("name: t\nfiles: {train: link.jsonl}\n")
        seconds, result = timed(load_splits, load_task(root / "t.yaml"))
        print(f"files: files: a symlink to /etc/hostname: {result}")


def tiny_student():
    from conftest import save_tiny
    from tiny_run import make_run

    from stepdistill.student import Student

    folder = Path(tempfile.mkdtemp())
    return Student.load(make_run(save_tiny("causal", folder / "model"), folder / "run"))


def attack_serve() -> None:
    import httpx
    from serve_helpers import running_server
    from test_security_serve import SlowStudent

    from stepdistill.serve import ServeSettings

    student = tiny_student()
    key = {"Authorization": "Bearer k"}
    with running_server(student, ServeSettings(api_key="k", batch_wait_ms=200)) as live:

        async def burst():
            async with httpx.AsyncClient(timeout=60, headers=key) as client:
                bad = client.post(
                    f"{live.url}/v1/predict",
                    content=b'{"inputs": ["\\ud800"]}',
                    headers={"Content-Type": "application/json"},
                )
                good = [
                    client.post(f"{live.url}/v1/predict", json={"inputs": [f"item {i}"]})
                    for i in range(12)
                ]
                return await asyncio.gather(bad, *good)

        bad, *good = asyncio.run(burst())
        ok = sum(r.status_code == 200 for r in good)
        print(
            f"serve: lone surrogate batched with 12 good requests: it got {bad.status_code}, "
            f"{ok} of 12 good ones 200"
        )
        host, port = live.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(300)]
        start = time.perf_counter()
        statuses = [
            httpx.post(
                f"{live.url}/v1/predict", json={"inputs": ["x"]}, headers=key, timeout=30
            ).status_code
            for _ in range(3)
        ]
        print(
            f"serve: 300 idle sockets open: 3 normal requests got {statuses} "
            f"in {time.perf_counter() - start:.2f} s"
        )
        time.sleep(10.5)
        closed = 0
        for sock in idle:
            sock.settimeout(1)
            try:
                closed += sock.recv(1) == b""
            except OSError:
                pass
            sock.close()
        print(f"serve: {closed} of 300 idle sockets closed by the server after 10.5 s")
        both = [("Authorization", b"Bearer wrong"), ("Authorization", b"Bearer k")]
        response = httpx.get(f"{live.url}/v1/models", headers=both)
        print(f"serve: two Authorization headers: {response.status_code}")
    slow = SlowStudent(student, 1.0)
    settings = ServeSettings(api_key="k", dynamic_batching=False, request_timeout_s=5)
    with running_server(slow, settings) as live:
        host, port = live.url.removeprefix("http://").split(":")
        body = b'{"inputs": ["' + b"x" * 2000 + b'"]}'
        head = b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        for _ in range(8):
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(head + body)
        time.sleep(0.1)
        start = time.perf_counter()
        response = httpx.post(
            f"{live.url}/v1/predict", json={"inputs": ["x"]}, headers=key, timeout=60
        )
        print(
            f"serve: 8 dropped requests (1 s model call each), then one input: "
            f"{response.status_code} after {time.perf_counter() - start:.2f} s "
            f"({slow.calls} model calls in all)"
        )
        slow.seconds = 30
        start = time.perf_counter()
        responses: list = []
        threads = [
            threading.Thread(
                target=lambda: responses.append(
                    httpx.post(
                        f"{live.url}/v1/predict", json={"inputs": ["x"]}, headers=key, timeout=60
                    )
                )
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(
            f"serve: 2 requests behind a 30 s model call, request_timeout_s=5: "
            f"{sorted(r.status_code for r in responses)} after {time.perf_counter() - start:.2f} s"
        )
        slow.seconds = 0
    from stepdistill.serve.batching import Batcher

    batcher = Batcher(lambda k, items: time.sleep(1) or items, enabled=False)
    for i in range(400):
        batcher.submit("k", [i])
    time.sleep(0.05)
    seconds, _ = timed(batcher.close)
    print(f"serve: shutdown with 400 requests queued behind a 1 s call: {seconds:.2f} s")


def attack_teacher() -> None:
    from teacher_helpers import SECRET, ServerState, make_toy_task, scripted_server

    from stepdistill.annotate import annotate

    os.environ["OPENAI_API_KEY"] = SECRET
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        task = make_toy_task(root, count=50)
        options = {"model": "m", "timeout": 2, "max_retries": 0}
        with scripted_server(ServerState(plan=lambda p, a: "trickle")) as (url, _):
            start = time.perf_counter()
            summary = annotate(
                str(task),
                "openai",
                root / "a",
                splits=("train",),
                quiet=True,
                teacher_options={**options, "base_url": url},
            )
            print(
                f"teacher: trickling server, 50 examples, timeout=2, max_retries=0: "
                f"{time.perf_counter() - start:.1f} s, failures "
                f"{summary['splits']['train']['failures']}"
            )
        options = {"model": "m", "concurrency": 8, "max_tokens": 100, "timeout": 10}
        with scripted_server(ServerState(delay=0.2)) as (url, _):
            summary = annotate(
                str(task),
                "openai",
                root / "b",
                splits=("train",),
                quiet=True,
                max_tokens=1000,
                teacher_options={**options, "base_url": url},
            )
            usage = summary["usage"]
            print(
                f"teacher: --max-tokens 1000, concurrency 8: spent "
                f"{usage['prompt_tokens'] + usage['completion_tokens']}; stop message: "
                f"{summary['stopped']!r}"
            )
        options = {"model": "m", "max_tokens": 256, "timeout": 30, "max_retries": 0}
        with scripted_server(ServerState(plan=lambda p, a: "huge-no-usage")) as (url, _):
            summary = annotate(
                str(task),
                "openai",
                root / "c",
                splits=("train",),
                quiet=True,
                limit=1,
                teacher_options={**options, "base_url": url},
            )
            print(
                f"teacher: 3 MB answer without usage: counted "
                f"{summary['usage']['completion_tokens']} completion tokens; failures "
                f"{summary['splits']['train']['failures']}"
            )


ATTACKS = {
    "parse": attack_parse,
    "csv": attack_csv,
    "files": attack_files,
    "serve": attack_serve,
    "teacher": attack_teacher,
}

if __name__ == "__main__":
    for name in sys.argv[1:] or list(ATTACKS):
        ATTACKS[name]()
