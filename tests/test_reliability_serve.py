"""The server under hostile and heavy use: it answers each bad request with a 4xx and
is still up and correct right after it; 200 concurrent loopback requests all get the
right answer in bounded time. (Single bad bodies, auth on every route and 12
concurrent clients are in test_serve.py.)"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time

import httpx
import pytest
from serve_helpers import running_server

from stepdistill.serve import ServeSettings

KEY = "reliability-key"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
INPUTS = [f"premise: item {i}\nhypothesis: {'y' * (i % 7)}" for i in range(20)]


@pytest.fixture(scope="module")
def expected(tiny_student):
    return {text: p.as_dict() for text, p in zip(INPUTS, tiny_student.predict(INPUTS), strict=True)}


@pytest.fixture(scope="module")
def server(tiny_student, expected):
    settings = ServeSettings(
        api_key=KEY, max_body_bytes=20_000, max_input_chars=2_000, max_inputs=8, batch_wait_ms=10
    )
    with running_server(tiny_student, settings) as live:
        yield live


def raw_exchange(url: str, data: bytes, read: bool = True) -> bytes:
    """Send bytes on a fresh TCP connection; the reply (if any) or b""."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        if not read:
            return b""
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        try:
            while chunk := sock.recv(65536):
                reply += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return reply


BAD = [
    ("malformed JSON", "/v1/predict", b"{not json", AUTH, 400),
    ("truncated JSON", "/v1/predict", b'{"inputs": ["a"', AUTH, 400),
    ("non-UTF-8 body", "/v1/predict", b'{"inputs": ["\xff\xfe"]}', AUTH, 400),
    (
        "JSON nested 5000 deep",
        "/v1/predict",
        b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        AUTH,
        400,
    ),
    ("NaN where a bool goes", "/v1/predict", b'{"inputs": ["a"], "rationale": NaN}', AUTH, 400),
    ("inputs an object", "/v1/predict", b'{"inputs": {"a": 1}}', AUTH, 400),
    ("input a number", "/v1/predict", b'{"inputs": [12]}', AUTH, 400),
    (
        "record field a list",
        "/v1/predict",
        b'{"inputs": [{"premise": ["p"], "hypothesis": "h"}]}',
        AUTH,
        400,
    ),
    ("too many inputs", "/v1/predict", json.dumps({"inputs": ["a"] * 9}).encode(), AUTH, 400),
    ("input too long", "/v1/predict", json.dumps({"inputs": ["a" * 2_001]}).encode(), AUTH, 413),
    ("body too large", "/v1/predict", json.dumps({"inputs": ["a" * 25_000]}).encode(), AUTH, 413),
    (
        "max_tokens 1e309",
        "/v1/completions",
        b'{"model": "m", "prompt": "p", "max_tokens": 1e309}',
        AUTH,
        400,
    ),
    (
        "max_tokens a string",
        "/v1/completions",
        b'{"model": "m", "prompt": "p", "max_tokens": "ten"}',
        AUTH,
        400,
    ),
    ("messages empty", "/v1/chat/completions", b'{"model": "m", "messages": []}', AUTH, 400),
    ("no bearer", "/v1/predict", b'{"inputs": ["a"]}', {"Content-Type": "application/json"}, 401),
    (
        "wrong bearer",
        "/v1/predict",
        b'{"inputs": ["a"]}',
        {**AUTH, "Authorization": "Bearer nope"},
        401,
    ),
    (
        "basic auth",
        "/v1/predict",
        b'{"inputs": ["a"]}',
        {**AUTH, "Authorization": f"Basic {KEY}"},
        401,
    ),
    (
        "bearer with a longer key",
        "/v1/predict",
        b'{"inputs": ["a"]}',
        {**AUTH, "Authorization": f"Bearer {KEY}x"},
        401,
    ),
    ("text/plain body", "/v1/predict", b"inputs=a", {**AUTH, "Content-Type": "text/plain"}, 400),
]


def check_alive(url: str, expected: dict) -> None:
    response = httpx.post(
        f"{url}/v1/predict", json={"inputs": INPUTS[:2]}, headers=AUTH, timeout=60
    )
    assert response.status_code == 200, response.text
    assert [p["raw"] for p in response.json()["predictions"]] == [
        expected[t]["raw"] for t in INPUTS[:2]
    ]


def test_each_bad_request_gets_a_4xx_and_the_server_answers_right_after(server, expected):
    url = server.url
    statuses = {}
    for name, path, body, headers, status in BAD:
        response = httpx.post(url + path, content=body, headers=headers, timeout=60)
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert status is None or response.status_code == status, (
            name,
            response.status_code,
            response.text,
        )
        assert response.json()["error"]["message"], name
        statuses[name] = response.status_code
        check_alive(url, expected)
    # Below HTTP: a body cut off by a client that goes away, garbage instead of HTTP,
    # and a declared length far past the limit.
    port_url = url
    raw_exchange(
        port_url,
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b'\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"inputs": [',
        read=False,
    )
    check_alive(url, expected)
    assert raw_exchange(port_url, b"GARBAGE \x00\xff\r\n\r\n").startswith(b"HTTP/1.1 400")
    check_alive(url, expected)
    reply = raw_exchange(
        port_url,
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 413")
    check_alive(url, expected)
    assert httpx.get(f"{url}/health").status_code == 200
    print(
        f"\nserve: {len(BAD)} bad HTTP requests, all 4xx ({', '.join(f'{s}: {list(statuses.values()).count(s)}' for s in sorted(set(statuses.values())))}), "
        f"and 3 below HTTP (a body cut off, garbage, a 100 GB Content-Length); the server answered correctly after every one"
    )


def test_200_concurrent_requests_all_answered_correctly_in_bounded_time(server, expected):
    url, calls_before = server.url, server.model_calls
    count = 200

    async def one(client: httpx.AsyncClient, i: int) -> tuple[bool, float]:
        text = INPUTS[i % len(INPUTS)]
        started = time.perf_counter()
        if i % 3 == 0:
            response = await client.post("/v1/predict", json={"inputs": [text]})
            ok = (
                response.status_code == 200
                and response.json()["predictions"][0]["raw"] == expected[text]["raw"]
            )
        elif i % 3 == 1:
            response = await client.post(
                "/v1/chat/completions",
                json={"model": "run", "messages": [{"role": "user", "content": text}]},
            )
            ok = response.status_code == 200 and response.json()["choices"][0]["message"][
                "content"
            ] == (expected[text]["label"] or expected[text]["raw"])
        else:
            response = await client.post("/v1/completions", json={"model": "run", "prompt": text})
            ok = response.status_code == 200 and response.json()["choices"][0]["text"] == (
                expected[text]["label"] or expected[text]["raw"]
            )
        return ok, time.perf_counter() - started

    async def run() -> list[tuple[bool, float]]:
        limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
        async with httpx.AsyncClient(
            base_url=url, headers=AUTH, limits=limits, timeout=120
        ) as client:
            return await asyncio.gather(
                *(one(client, i) for i in range(count)), return_exceptions=False
            )

    started = time.perf_counter()
    results = asyncio.run(run())
    elapsed = time.perf_counter() - started
    errors = sum(not ok for ok, _ in results)
    latencies = sorted(seconds for _, seconds in results)
    calls = server.model_calls - calls_before
    assert errors == 0
    assert elapsed < 60, elapsed
    assert calls < count  # concurrent requests shared model calls
    print(
        f"\nserve: {count} concurrent requests (predict / chat / completions) in {elapsed:.2f} s, 0 errors, all answers "
        f"correct; {calls} model calls; latency median {statistics.median(latencies):.2f} s, max {latencies[-1]:.2f} s"
    )
