"""The openai backend against real HTTP servers on loopback: a scripted one with fault
injection, and the project's own server with a tiny model."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from teacher_helpers import (
    SECRET,
    ServerState,
    files_containing,
    make_toy_task,
    prompt_id,
    scripted_server,
)

from stepdistill.annotate import annotate
from stepdistill.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
FAST = {"max_wait": 0.02, "timeout": 0.5}  # retries in milliseconds, not minutes


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


@pytest.mark.parametrize("style", ["completions", "chat"])
def test_annotates_through_the_openai_backend(tmp_path, style):
    task = make_toy_task(tmp_path, count=10)
    with scripted_server() as (url, state):
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={
                "model": "toy-model",
                "base_url": url,
                "style": style,
                "concurrency": 4,
                **FAST,
            },
        )
    rows = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert len(rows) == 10 and all(row["parse_status"] == "ok" for row in rows)
    assert [row["id"] for row in rows] == [f"train-{i}" for i in range(10)]  # split order kept
    # The scripted model is wrong on 10 and 15: accuracy is counted against gold.
    assert summary["splits"]["train"]["teacher_correct"] == 8
    assert summary["usage"]["prompt_tokens"] > 0 and summary["usage"]["requests"] == 10
    assert sum(state.answered.values()) == 10
    assert set(state.headers_seen) == {f"Bearer {SECRET}"}
    assert files_containing(tmp_path, SECRET) == []


def test_faults_are_retried_and_every_failure_is_accounted(tmp_path):
    task = make_toy_task(tmp_path, count=24)
    kinds = ["429-retry-after", "429", "500", "malformed", "truncated", "slow"]
    doomed = set()

    def plan(prompt: str, attempt: int) -> str | None:
        number = int(prompt.rsplit("Is ", 1)[1].split(" ")[0])
        if number in (30, 31):  # always failing: must end as accounted failures
            doomed.add(prompt)
            return "500"
        if number % 3 == 0 and attempt == 1:  # a fault on the first try of a third of them
            return kinds[(number // 3) % len(kinds)]
        return None

    with scripted_server(ServerState(plan=plan)) as (url, state):
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={
                "model": "toy-model",
                "base_url": url,
                "concurrency": 8,
                "max_retries": 3,
                **FAST,
            },
        )
    split = summary["splits"]["train"]
    rows = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert len(rows) == 24  # the run completed: one row per example
    assert set(state.faults) == set(kinds)  # every fault kind was injected
    assert split["parse_status"] == {"ok": 22, "error": 2}
    assert split["failures"] == {"retries exhausted: InternalServerError 500": 2}
    assert {row["input"] for row in rows if row["parse_status"] == "error"} == {
        "Is 30 even?",
        "Is 31 even?",
    }
    assert all(state.attempts[prompt] == 4 for prompt in doomed)  # 1 try + 3 retries
    # Every fault but the last try of each doomed request was retried.
    assert summary["retries"] == sum(state.faults.values()) - 2
    # Failed attempts are in the store's account, answers only once each.
    with sqlite3.connect(tmp_path / "out" / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 22
        assert db.execute("SELECT COUNT(DISTINCT key) FROM failures").fetchone()[0] == 2
    assert files_containing(tmp_path, SECRET) == []


def test_rerun_asks_only_what_failed(tmp_path):
    task = make_toy_task(tmp_path, count=6)
    state = ServerState(
        plan=lambda prompt, attempt: (
            "500" if "Is 12 even?\nA:" in prompt[-20:] and attempt <= 2 else None
        )
    )
    options = {"model": "toy-model", "concurrency": 2, "max_retries": 1, **FAST}
    with scripted_server(state) as (url, state):
        first = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={**options, "base_url": url},
        )
        second = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={**options, "base_url": url},
        )
    assert first["splits"]["train"]["parse_status"] == {"ok": 5, "error": 1}
    assert second["splits"]["train"]["parse_status"] == {"ok": 6}
    assert {k: second["store"][k] for k in ("answered_from_store", "asked")} == {
        "answered_from_store": 5,
        "asked": 1,
    }
    assert (
        second["store"]["total_prompt_tokens"]
        == first["usage"]["prompt_tokens"] + second["usage"]["prompt_tokens"]
    )
    assert all(count == 1 for count in state.answered.values()) and len(state.answered) == 6


def test_budget_stops_cleanly_and_rerun_continues(tmp_path):
    task = make_toy_task(tmp_path, count=20)
    options = {"model": "toy-model", "concurrency": 4, "max_tokens": 40, **FAST}
    with scripted_server(ServerState(delay=0.02)) as (url, state):
        first = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            max_tokens=300,
            teacher_options={**options, "base_url": url},
        )
        assert "token budget reached" in first["stopped"]
        done = first["splits"]["train"]["rows"]
        # Requests in flight are counted at their most before they start: the cap holds.
        spent = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
        assert 0 < done < 20 and 0 < spent <= 300
        # Answers in flight at the stop were waited for, stored, written and counted.
        with sqlite3.connect(tmp_path / "out" / "store.sqlite") as db:
            assert (
                db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                == done
                == first["usage"]["requests"]
            )
        assert sum(state.answered.values()) == done
        second = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={**options, "base_url": url},
        )
    assert (
        second["store"]["answered_from_store"] == done and second["splits"]["train"]["parsed"] == 20
    )
    assert all(count == 1 for count in state.answered.values())


def test_kill_9_then_rerun_is_complete_with_no_stored_request_repeated(tmp_path):
    task = make_toy_task(tmp_path, count=30)
    out = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONPATH": str(REPO)}
    state = ServerState(delay=0.05)
    with scripted_server(state) as (url, state):
        command = [
            sys.executable,
            "-m",
            "stepdistill.cli",
            "annotate",
            "--task",
            str(task),
            "--teacher",
            "openai",
            "--model",
            "toy-model",
            "--base-url",
            url,
            "--concurrency",
            "2",
            "--output",
            str(out),
            "--splits",
            "train",
        ]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        store = out / "store.sqlite"
        deadline = time.monotonic() + 60
        stored = 0
        while stored < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
            if store.exists():
                try:
                    with sqlite3.connect(store) as db:
                        stored = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.OperationalError:  # tables not created yet
                    pass
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (out / "train.jsonl").exists(), "killed before the end, as intended"
        with sqlite3.connect(store) as db:
            stored_prompts = [row[0] for row in db.execute("SELECT prompt FROM responses")]
        asked_before = dict(state.attempts)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
    rows = read_jsonl(out / "train.jsonl")
    assert len(rows) == 30 and all(row["parse_status"] == "ok" for row in rows)
    assert 8 <= len(stored_prompts) < 30
    # Nothing stored before the kill was asked again.
    assert all(state.attempts[prompt] == asked_before[prompt] == 1 for prompt in stored_prompts)
    # At most the requests in flight at the kill (concurrency 2) were asked twice.
    repeated = [prompt_id(p) for p, count in state.attempts.items() if count > 1]
    assert len(repeated) <= 2
    assert len(state.attempts) == 30
    assert files_containing(tmp_path, SECRET) == []


def test_missing_key_is_an_error_that_names_the_variable_not_a_value(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("MY_TEACHER_KEY", "wrong-key")
    task = make_toy_task(tmp_path, count=2)
    with pytest.raises(ValueError, match=r"\$OPENAI_API_KEY"):
        annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={"model": "x"},
        )
    estimate = annotate(
        str(task),
        "openai",
        tmp_path / "out",
        splits=("train",),
        quiet=True,
        estimate=True,
        teacher_options={"model": "gpt-4o-mini"},
    )  # an estimate needs no key
    assert estimate["total"]["to_ask"] == 2
    with scripted_server() as (url, _):
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={
                "model": "x",
                "base_url": url,
                "api_key_env": "MY_TEACHER_KEY",
                **FAST,
            },
        )
    assert summary["splits"]["train"]["failures"] == {"AuthenticationError 401": 2}
    assert files_containing(tmp_path, "wrong-key") == []


def test_against_the_project_server_with_a_tiny_model(tmp_path, tiny_causal):
    serve_helpers = pytest.importorskip("serve_helpers")
    from stepdistill.serve import ServeSettings
    from stepdistill.student import Student

    task = make_toy_task(tmp_path, count=3)
    student = Student.load(tiny_causal)
    with serve_helpers.running_server(student, ServeSettings(api_key=SECRET)) as server:
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={
                "model": "tiny",
                "base_url": server.url + "/v1",
                "max_tokens": 8,
                "concurrency": 2,
                "max_wait": 0.02,
            },
        )
    rows = read_jsonl(tmp_path / "out" / "train.jsonl")
    # A random tiny model writes nonsense: what matters is that every request came
    # back over real HTTP, with usage, and was parsed (most likely as unparseable).
    assert len(rows) == 3 and all(row["raw"] is not None and "error" not in row for row in rows)
    assert summary["usage"]["completion_tokens"] > 0
    assert files_containing(tmp_path, SECRET) == []


def test_retry_after_and_error_text_helpers():
    from types import SimpleNamespace

    from stepdistill.teachers.openai import describe, retry_after_seconds

    def error(headers):
        return SimpleNamespace(response=SimpleNamespace(headers=headers))

    assert retry_after_seconds(error({"retry-after": "2"})) == 2.0
    assert retry_after_seconds(error({"retry-after-ms": "250"})) == 0.25
    assert (
        0 <= retry_after_seconds(error({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) < 1
    )  # a past date
    assert retry_after_seconds(error({})) is None and retry_after_seconds(ValueError("x")) is None
    # Even if a server echoed the key back, it never reaches the failure account.
    assert SECRET not in describe(RuntimeError(f"bad key {SECRET}"), SECRET)


def test_rate_limiter_paces_once_the_bucket_is_empty():
    import asyncio

    from stepdistill.teachers.openai import RateLimiter

    async def run() -> float:
        limiter = RateLimiter(per_minute=600)  # 10 a second
        limiter.available = 0
        start = time.monotonic()
        for _ in range(3):
            await limiter.acquire()
        return time.monotonic() - start

    assert 0.25 <= asyncio.run(run()) < 1.5


def test_samples_through_the_openai_backend_use_one_seed_each(tmp_path):
    task = make_toy_task(tmp_path, count=4)
    options = {"model": "toy-model", "temperature": 0.7, "concurrency": 4, **FAST}
    with scripted_server() as (url, state):
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            samples=3,
            teacher_options={**options, "base_url": url},
        )
    rows = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert len(rows) == 12 and sorted({row["sample"] for row in rows}) == [0, 1, 2]
    assert state.seeds == {0: 4, 1: 4, 2: 4}  # sample k asks with seed k
    assert summary["store"]["asked"] == 12 and summary["splits"]["train"]["examples"] == 4


def test_retry_after_is_honoured_beyond_max_wait(tmp_path):
    task = make_toy_task(tmp_path, count=2)
    state = ServerState(
        plan=lambda prompt, attempt: "429-retry-after-long" if attempt == 1 else None
    )
    with scripted_server(state) as (url, state):
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={"model": "toy-model", "base_url": url, **FAST},
        )
    assert summary["splits"]["train"]["parsed"] == 2 and summary["retries"] == 2
    for times in state.times.values():
        assert len(times) == 2 and times[1] - times[0] >= 0.4  # not max_wait's 0.02
