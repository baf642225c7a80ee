"""Issue 29, items 4 and 7: a hostile or broken teacher server.

Before: the timeout was per read, so a server sending a byte at a time took 426 s for
50 examples with timeout=2; --max-tokens 1000 spent 2,040 tokens while the stop message
said 1,080; a 3 MB answer without usage counted as 750k tokens."""

from __future__ import annotations

import time

import pytest
from teacher_helpers import SECRET, ServerState, make_toy_task, scripted_server

from stepdistill.annotate import annotate
from stepdistill.cost import Budget


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def test_timeout_is_per_attempt_not_per_read(tmp_path):
    task = make_toy_task(tmp_path, count=4)
    options = {"model": "m", "timeout": 0.5, "max_retries": 1, "max_wait": 0.01}
    with scripted_server(ServerState(plan=lambda prompt, attempt: "trickle")) as (url, _):
        start = time.perf_counter()
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={**options, "base_url": url},
        )
        elapsed = time.perf_counter() - start
    # 2 attempts of 0.5 s each (the trickled body would take ~25 s per attempt)
    assert elapsed < 4, elapsed
    assert summary["splits"]["train"]["failures"] == {"retries exhausted: TimeoutError": 4}


def test_deadline_covers_retries(tmp_path):
    task = make_toy_task(tmp_path, count=2)
    options = {"model": "m", "timeout": 0.3, "deadline": 1.0, "max_retries": 50, "max_wait": 0.01}
    with scripted_server(ServerState(plan=lambda prompt, attempt: "trickle")) as (url, _):
        start = time.perf_counter()
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={**options, "base_url": url},
        )
    assert time.perf_counter() - start < 3
    assert summary["splits"]["train"]["failures"] == {"deadline": 2}


def test_token_cap_counts_requests_in_flight(tmp_path):
    task = make_toy_task(tmp_path, count=40)
    options = {"model": "m", "concurrency": 8, "max_tokens": 60, "timeout": 5}
    with scripted_server(ServerState(delay=0.05)) as (url, _):
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            max_tokens=1000,
            teacher_options={**options, "base_url": url},
        )
    spent = summary["usage"]["prompt_tokens"] + summary["usage"]["completion_tokens"]
    assert 800 < spent <= 1000, summary["usage"]  # requests go on while one can fit
    # The message gives the final total (in-flight answers included), not the one at the stop.
    assert summary["stopped"] == f"token budget reached: {spent} tokens spent of 1000"


def test_budget_reserve_refuses_what_could_pass_the_cap():
    budget = Budget("m", {}, max_tokens=100)
    first, second = object(), object()
    assert budget.reserve(first, 30, 40)
    assert not budget.reserve(second, 30, 40)  # 140 > 100 with the first in flight
    assert budget.stopped is None  # the first may settle below its most: wait
    budget.add({"prompt_tokens": 30, "completion_tokens": 5}, first)
    assert budget.reserved == {} and budget.tokens == 35
    assert budget.reserve(second, 30, 35)  # 35 + 65 = 100 fits
    assert not budget.reserve(object(), 1, 1) and budget.stopped is None
    budget.add({"prompt_tokens": 30, "completion_tokens": 35}, second)
    assert not budget.reserve(object(), 1, 1)  # nothing in flight and it cannot fit
    assert budget.stopped == "token budget reached: 100 tokens spent of 100"


def test_huge_answer_without_usage_is_refused_not_counted(tmp_path):
    task = make_toy_task(tmp_path, count=2)
    options = {"model": "m", "max_tokens": 64, "timeout": 10, "max_retries": 0}
    with scripted_server(ServerState(plan=lambda prompt, attempt: "huge-no-usage")) as (url, _):
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            teacher_options={**options, "base_url": url},
        )
    assert summary["splits"]["train"]["failures"] == {"answer too long": 2}
    assert summary["usage"]["completion_tokens"] <= 2 * 64
