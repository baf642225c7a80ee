"""Teacher-stage throughput: examples/s through the openai backend against a local
OpenAI-compatible server at several concurrency levels, and replay from the store.

The server is the tests' scripted one (tests/teacher_helpers.py) on loopback, with a
fixed per-request latency standing in for a model's generation time: what is measured
is the client side - concurrency, retries machinery, parsing, and one SQLite commit
per answer - not a model. Usage:

    python benchmarks/annotate_throughput.py --examples 200 --latency 0.05
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the scripted server

from teacher_helpers import SECRET, ServerState, make_toy_task, scripted_server  # noqa: E402

from stepdistill.annotate import annotate  # noqa: E402


def timed(**kwargs) -> tuple[float, dict]:
    start = time.perf_counter()
    summary = annotate(quiet=True, splits=("train",), **kwargs)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument(
        "--latency", type=float, default=0.05, help="seconds the server takes per request"
    )
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()
    os.environ["OPENAI_API_KEY"] = SECRET
    print(
        f"# {args.examples} examples, server latency {args.latency * 1000:.0f} ms/request, "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"{'what':<34}{'seconds':>9}{'examples/s':>12}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        task = str(make_toy_task(root, count=args.examples))
        with scripted_server(ServerState(delay=args.latency)) as (url, state):
            last_store = None
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                out = root / f"openai-c{concurrency}"
                seconds, summary = timed(
                    task=task,
                    teacher="openai",
                    output=out,
                    teacher_options={"model": "toy", "base_url": url, "concurrency": concurrency},
                )
                assert summary["splits"]["train"]["parsed"] == args.examples, summary
                print(
                    f"{f'openai, concurrency {concurrency}':<34}{seconds:>9.2f}{args.examples / seconds:>12.1f}"
                )
                last_store = out / "store.sqlite"
            # The same command again: every answer from the store, no request sent.
            before = sum(state.attempts.values())
            seconds, summary = timed(
                task=task,
                teacher="openai",
                output=out,
                teacher_options={"model": "toy", "base_url": url},
            )
            assert sum(state.attempts.values()) == before and summary["store"]["asked"] == 0
            print(
                f"{'rerun (all cached in store)':<34}{seconds:>9.2f}{args.examples / seconds:>12.1f}"
            )
        seconds, summary = timed(
            task=task,
            teacher="store",
            output=root / "replay",
            teacher_options={"path": str(last_store)},
        )
        assert summary["splits"]["train"]["parsed"] == args.examples
        print(f"{'store replay backend':<34}{seconds:>9.2f}{args.examples / seconds:>12.1f}")


if __name__ == "__main__":
    main()
