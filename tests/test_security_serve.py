"""Issue 29, items 1, 2, 5 and 8: the server under hostile clients.

Before: a lone surrogate failed every request batched with it (500); work for clients
that had gone was never dropped and no request had a deadline; idle sockets were never
closed; of two Authorization headers the last won and a non-ASCII key could never
authenticate; binding 0.0.0.0 without a key only warned."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
from serve_helpers import running_server

from stepdistill.serve import ServeSettings, serve
from stepdistill.serve.batching import Batcher, Expired, QueueFull, ShuttingDown

KEY = "clé-sécurité"  # non-ASCII: a UTF-8 client sends it as UTF-8 bytes
AUTH = {"Authorization": "Bearer " + KEY}
SURROGATE_BODY = b'{"inputs": ["fine", "bad \\ud800 text"]}'


def utf8_headers(headers: dict[str, str]) -> dict[str, bytes]:
    return {k: v.encode("utf-8") for k, v in headers.items()}


class SlowStudent:
    """The tiny student with a model call that takes ``seconds``."""

    def __init__(self, student, seconds: float):
        self._student, self.seconds, self.calls = student, seconds, 0

    def __getattr__(self, name):
        return getattr(self._student, name)

    def predict(self, texts, rationale=False):
        self.calls += 1
        time.sleep(self.seconds)
        return self._student.predict(texts, rationale=rationale)


# ---- item 1: invalid text fails its own request only ----------------------------------


def test_lone_surrogate_is_400_and_fails_no_other_request(tiny_student):
    settings = ServeSettings(api_key=KEY, batch_wait_ms=200)  # all in one batch window
    with running_server(tiny_student, settings) as live:

        async def burst():
            async with httpx.AsyncClient(timeout=60, headers=utf8_headers(AUTH)) as client:
                good = [
                    client.post(f"{live.url}/v1/predict", json={"inputs": [f"item {i}"]})
                    for i in range(12)
                ]
                bad = client.post(
                    f"{live.url}/v1/predict",
                    content=SURROGATE_BODY,
                    headers={"Content-Type": "application/json"},
                )
                return await asyncio.gather(bad, *good)

        bad, *good = asyncio.run(burst())
        assert bad.status_code == 400 and "surrogate" in bad.json()["error"]["message"]
        assert [r.status_code for r in good] == [200] * 12
        chat = httpx.post(
            f"{live.url}/v1/chat/completions",
            content=b'{"model": "m", "messages": [{"role": "user", "content": "\\udfff"}]}',
            headers={**utf8_headers(AUTH), "Content-Type": "application/json"},
        )
        assert chat.status_code == 400


def test_a_failed_batch_is_retried_job_by_job():
    def runner(key, items):
        if "bad" in items:
            raise ValueError("cannot encode")
        return [item.upper() for item in items]

    batcher = Batcher(runner, wait_ms=200)
    futures = [batcher.submit("k", [f"ok{i}"]) for i in range(5)] + [batcher.submit("k", ["bad"])]
    results = [f.exception(timeout=10) or f.result() for f in futures]
    batcher.close()
    assert results[:5] == [[f"OK{i}"] for i in range(5)]
    assert isinstance(results[5], ValueError)


# ---- item 2: dropped clients, deadlines, a bounded queue, a prompt shutdown ----------


def test_cancelled_and_expired_jobs_never_reach_the_model():
    ran: list[str] = []
    gate = threading.Event()

    def runner(key, items):
        gate.wait(10)
        ran.extend(items)
        return items

    batcher = Batcher(runner, enabled=False)
    first = batcher.submit("k", ["first"])
    time.sleep(0.1)  # the worker holds "first" until the gate opens
    gone = batcher.submit("k", ["gone"])
    late = batcher.submit("k", ["late"], deadline=time.monotonic() + 0.05)
    kept = batcher.submit("k", ["kept"])
    assert gone.cancel()
    time.sleep(0.1)
    gate.set()
    assert kept.result(timeout=10) == ["kept"] and first.result() == ["first"]
    assert isinstance(late.exception(timeout=10), Expired)
    assert ran == ["first", "kept"] and batcher.dropped == 2
    batcher.close()


def test_queue_is_bounded_by_inputs_and_characters():
    gate = threading.Event()
    batcher = Batcher(
        lambda k, items: gate.wait(10) and items,
        max_queue_items=10,
        max_queue_size=1000,
        enabled=False,
    )
    batcher.submit("k", ["x"])  # taken by the worker: no longer waiting
    time.sleep(0.1)
    batcher.submit("k", ["x"] * 10, size=10)
    with pytest.raises(QueueFull):
        batcher.submit("k", ["x"], size=1)  # the 11th input waiting
    with pytest.raises(QueueFull):
        Batcher(lambda k, i: i, max_queue_size=100).submit("k", ["x"], size=101)
    gate.set()
    batcher.close()


def test_close_fails_waiting_jobs_at_once():
    batcher = Batcher(lambda k, items: time.sleep(0.5) or items, enabled=False)
    futures = [batcher.submit("k", [i]) for i in range(200)]
    time.sleep(0.05)
    start = time.perf_counter()
    batcher.close()
    assert time.perf_counter() - start < 2
    failed = [f for f in futures if isinstance(f.exception(timeout=5), ShuttingDown)]
    assert len(failed) >= 198


def test_dropped_clients_cost_nothing_and_requests_have_a_deadline(tiny_student):
    slow = SlowStudent(tiny_student, 0.6)
    settings = ServeSettings(api_key=KEY, dynamic_batching=False, request_timeout_s=2)
    with running_server(slow, settings) as live:
        host, port = live.url.removeprefix("http://").split(":")
        body = b'{"inputs": ["gone"]}'
        request = (
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Authorization: Bearer "
            + KEY.encode()
            + b"\r\n"
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        for _ in range(8):  # 8 clients ask and hang up at once
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(request)
        time.sleep(0.1)
        start = time.perf_counter()
        response = httpx.post(
            f"{live.url}/v1/predict",
            json={"inputs": ["here"]},
            headers=utf8_headers(AUTH),
            timeout=30,
        )
        waited = time.perf_counter() - start
        assert response.status_code == 200
        assert waited < 2.5, waited  # at most the call in progress and its own (8 x 0.6 before)
        assert slow.calls <= 3
        # A request stuck behind slow work gets 504 at its deadline, not an endless wait.
        slow.seconds = 5
        start = time.perf_counter()
        responses = []

        def ask():
            responses.append(
                httpx.post(
                    f"{live.url}/v1/predict",
                    json={"inputs": ["x"]},
                    headers=utf8_headers(AUTH),
                    timeout=30,
                )
            )

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(r.status_code for r in responses) == [504, 504]
        assert time.perf_counter() - start < 4
        slow.seconds = 0


# ---- item 5: idle sockets are closed, connections bounded -----------------------------


def test_idle_sockets_are_closed(tiny_student):
    settings = ServeSettings(api_key=KEY, header_timeout_s=1)
    with running_server(tiny_student, settings) as live:
        host, port = live.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port))) for _ in range(50)]
        trickle = socket.create_connection((host, int(port)))
        trickle.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")  # a head never finished
        time.sleep(1.6)
        for sock in [*idle, trickle]:
            sock.settimeout(2)
            assert sock.recv(10) == b""  # closed by the server
            sock.close()
        response = httpx.post(
            f"{live.url}/v1/predict", json={"inputs": ["x"]}, headers=utf8_headers(AUTH), timeout=30
        )
        assert response.status_code == 200


# ---- item 8: auth edges ---------------------------------------------------------------


def test_auth_edges(tiny_student):
    with running_server(tiny_student, ServeSettings(api_key=KEY)) as live:
        url = f"{live.url}/v1/models"
        assert httpx.get(url, headers=utf8_headers(AUTH)).status_code == 200
        both = [("Authorization", b"Bearer wrong"), ("Authorization", ("Bearer " + KEY).encode())]
        response = httpx.get(url, headers=both)
        assert response.status_code == 400 and "more than one" in response.text
        assert (
            httpx.get(url, headers={"Authorization": b"Bearer cl\xe9-s\xe9curit\xe9"}).status_code
            == 401
        )


def test_public_bind_without_a_key_is_refused(monkeypatch, tmp_path):
    monkeypatch.delenv("STEPDISTILL_API_KEY", raising=False)
    with pytest.raises(ValueError, match="refusing to serve on 0.0.0.0 without an API key"):
        serve(tmp_path / "no-model", host="0.0.0.0")
