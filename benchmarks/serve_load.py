"""Bounded load on `stepdistill serve` from loopback: latency and throughput.

Starts the server as a subprocess on 127.0.0.1 (once with dynamic batching, once
without), then for each concurrency level and for label-only / with-rationale sends
at most ``--requests`` requests to ``/v1/predict`` (one input each) and stops after
``--max-seconds`` whatever the count. Prints one markdown table.

    nice -n 19 .venv/bin/python benchmarks/serve_load.py RUN_DIR
    nice -n 19 .venv/bin/python benchmarks/serve_load.py --tiny   # a tiny random model

``--tiny`` builds the offline test model (tests/conftest.py: a 2-layer Llama, hidden
size 32, 400-token BPE vocabulary) into a temporary run folder: the figures then
measure the server and batching overhead, not a real model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Luke scored {n} points after playing {k} rounds of a trivia game. How many points did he score per round?"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_run(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))  # reuse the test suite's tiny model, not a copy of it
    from conftest import save_tiny
    from tiny_run import make_run

    return make_run(save_tiny("causal", folder / "tiny-causal"), folder / "tiny-run")


def start_server(
    run_dir: Path, batching: bool, threads: int, batch_size: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "stepdistill.cli",
        "serve",
        str(run_dir),
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--batch-size",
        str(batch_size),
    ]
    if not batching:
        command.append("--no-batching")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("STEPDISTILL_API_KEY", None)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


async def load(
    url: str, concurrency: int, rationale: bool, requests: int, max_seconds: float
) -> dict[str, float]:
    """``concurrency`` clients share a budget of ``requests``; all stop at ``max_seconds``."""
    latencies: list[float] = []
    errors = 0
    next_index = 0
    start = time.perf_counter()
    deadline = start + max_seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index, errors
        while next_index < requests and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            body = {
                "inputs": [QUESTION.format(n=index * 7 + 3, k=index % 9 + 2)],
                "rationale": rationale,
            }
            sent = time.perf_counter()
            try:
                response = await http.post(
                    f"{url}/v1/predict", json=body, timeout=max(1.0, deadline - sent + 30)
                )
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - sent)
            else:
                errors += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies) or [float("nan")]
    return {
        "done": len(latencies),
        "errors": errors,
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "rps": len(latencies) / wall,
        "wall_s": wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?", help="run folder or model folder to serve")
    parser.add_argument(
        "--tiny", action="store_true", help="serve the tiny random test model instead"
    )
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=64, help="requests per cell (upper bound)")
    parser.add_argument(
        "--max-seconds", type=float, default=10.0, help="time per cell (upper bound)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="inputs per generate call in the server"
    )
    args = parser.parse_args()
    if not args.run_dir and not args.tiny:
        parser.error("give RUN_DIR or --tiny")
    levels = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = tiny_run(Path(scratch)) if args.tiny else Path(args.run_dir)
        print(
            f"model: {'tiny random Llama (tests/conftest.py)' if args.tiny else run_dir}; "
            f"{args.requests} requests or {args.max_seconds:.0f} s per cell; server torch threads {args.threads}, "
            f"generate batch size {args.batch_size}\n"
        )
        print("| batching | rationale | clients | done | errors | p50 ms | p95 ms | req/s |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for batching in (True, False):
            process, url = start_server(run_dir, batching, args.threads, args.batch_size)
            try:
                asyncio.run(load(url, 1, False, 4, 30))  # warm-up: first calls pay one-off costs
                for rationale in (False, True):
                    for level in levels:
                        r = asyncio.run(
                            load(url, level, rationale, args.requests, args.max_seconds)
                        )
                        print(
                            f"| {'on' if batching else 'off'} | {'yes' if rationale else 'no'} | {level} | {r['done']} | "
                            f"{r['errors']} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['rps']:.1f} |",
                            flush=True,
                        )
            finally:
                process.terminate()
                process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
