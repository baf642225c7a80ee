"""The openai-batch backend against a scripted Batch API on loopback: results joined by
custom_id whatever the output order, failed lines accounted and retried, batch prices,
and a run killed at any step resuming the same batch without paying twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_helpers import BatchState, batch_server
from teacher_helpers import SECRET, files_containing, make_toy_task, toy_answer

import stepdistill.teachers.openai_batch as openai_batch
from stepdistill.annotate import annotate
from stepdistill.cost import load_prices, price_of
from stepdistill.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
FAULTS = {
    "toy-train-3-0": "error",  # in the error file: response null, an error object
    "toy-train-5-0": "status",  # in the output file with status_code 400
    "toy-train-7-0": "null",  # in the output file, response null
    "toy-train-8-0": "missing",  # no line at all
}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def run_batch(task: Path, out: Path, url: str, **options):
    return annotate(
        str(task),
        "openai-batch",
        out,
        splits=("train",),
        quiet=True,
        teacher_options={"model": "gpt-4o-mini", "base_url": url, "poll_interval": 0.01, **options},
    )


def uploaded(state: BatchState) -> list[list[dict]]:
    """The request lines of every uploaded batch file, in upload order."""
    return [
        [json.loads(line) for line in data.decode().splitlines()]
        for purpose, data in state.files.values()
        if purpose == "batch"
    ]


@pytest.mark.parametrize("style", ["completions", "chat"])
def test_results_are_joined_by_custom_id_and_failed_lines_are_accounted(tmp_path, style):
    task = make_toy_task(tmp_path, count=12)
    out = tmp_path / "out"
    with batch_server(BatchState(plan=FAULTS.get, seed=3)) as (url, state):
        summary = run_batch(task, out, url, style=style)
    assert state.uploads == 1 and state.created == 1
    (lines,) = uploaded(state)
    assert [line["custom_id"] for line in lines] == [f"toy-train-{i}-0" for i in range(12)]
    endpoint = "/v1/chat/completions" if style == "chat" else "/v1/completions"
    assert {line["url"] for line in lines} == {endpoint}
    (batch,) = state.batches.values()
    assert batch["endpoint"] == endpoint and batch["completion_window"] == "24h"
    # The output came back shuffled: each row still has the answer to its own prompt.
    output = read_jsonl(out / "batch-batch_1-output.jsonl")
    assert [r["custom_id"] for r in output] != sorted(r["custom_id"] for r in output)
    rows = read_jsonl(out / "train.jsonl")
    assert [row["id"] for row in rows] == [f"train-{i}" for i in range(12)]
    for row, line in zip(rows, lines, strict=True):
        prompt = (
            line["body"]["messages"][-1]["content"] if style == "chat" else line["body"]["prompt"]
        )
        if row["id"] in ("train-3", "train-5", "train-7", "train-8"):
            assert row["parse_status"] == "error" and row["raw"] is None
        else:
            assert row["raw"] == toy_answer(prompt) and row["parse_status"] == "ok"
    split = summary["splits"]["train"]
    assert split["failures"] == {
        "batch failed: server_error": 1,
        "batch failed: status 400": 1,
        "batch failed: no response": 1,
        "batch failed: no result (batch completed)": 1,
    }
    assert split["failed_ids"] == ["train-3", "train-5", "train-7", "train-8"]
    assert summary["pricing"] == "batch"
    assert summary["backend"]["batches_created"] == ["batch_1"]
    assert summary["store"]["asked"] == 12
    # The answers are in the response store, like those of a normal run.
    assert summary["store"]["total_prompt_tokens"] == summary["usage"]["prompt_tokens"] > 0
    recorded = json.loads((out / "batches.json").read_text())
    assert recorded["batches"][0]["id"] == "batch_1"
    assert recorded["batches"][0]["failed"] == sorted(FAULTS)
    assert state.headers_seen == {f"Bearer {SECRET}"}
    assert files_containing(tmp_path, SECRET) == []


def test_a_rerun_puts_only_the_failed_rows_in_a_new_batch(tmp_path):
    task = make_toy_task(tmp_path, count=12)
    out = tmp_path / "out"
    with batch_server(BatchState(plan=FAULTS.get)) as (url, state):
        run_batch(task, out, url)
        state.plan = lambda cid: None  # the server is well again
        second = run_batch(task, out, url)
    assert state.created == 2
    assert [line["custom_id"] for line in uploaded(state)[1]] == sorted(FAULTS)
    assert second["store"]["answered_from_store"] == 8 and second["store"]["asked"] == 4
    assert second["splits"]["train"]["parsed"] == 12 and "failures" not in second["splits"]["train"]
    # A third run asks nothing at all.
    with batch_server() as (url, state):
        third = run_batch(task, out, url)
    assert state.created == 0 and state.uploads == 0
    assert third["store"]["answered_from_store"] == 12


def test_retry_failed_asks_the_failed_rows_on_the_normal_api_at_normal_prices(tmp_path):
    task = make_toy_task(tmp_path, count=12)
    out = tmp_path / "out"
    with batch_server(BatchState(plan=FAULTS.get)) as (url, state):
        summary = run_batch(task, out, url, retry_failed=True)
    assert state.created == 1 and sum(state.live.values()) == 4
    assert summary["splits"]["train"]["parsed"] == 12
    # 8 answers at batch prices (half), 4 retried at the normal ones.
    (lines,) = uploaded(state)
    prices = load_prices()
    expected = 0.0
    for line in lines:
        prompt = line["body"]["prompt"]
        prompt_tokens, completion_tokens = len(prompt) // 4, len(toy_answer(prompt)) // 4
        share = 1.0 if line["custom_id"] in FAULTS else 0.5
        expected += share * price_of(prompt_tokens, completion_tokens, "gpt-4o-mini", prices)
    assert summary["usage"]["cost_usd"] == pytest.approx(expected, abs=2e-6)


def test_every_split_goes_in_one_batch(tmp_path):
    make_toy_task(tmp_path, count=6)
    (tmp_path / "toy.yaml").write_text(
        (tmp_path / "toy.yaml")
        .read_text()
        .replace("files: {train: toy.jsonl}", "files: {train: toy.jsonl, test: toy.jsonl}")
    )
    with batch_server() as (url, state):
        summary = annotate(
            str(tmp_path / "toy.yaml"),
            "openai-batch",
            tmp_path / "out",
            splits=("train", "test"),
            quiet=True,
            teacher_options={"model": "m", "base_url": url, "poll_interval": 0.01},
        )
    assert state.created == 1
    ids = [line["custom_id"] for line in uploaded(state)[0]]
    # The same rows under two split names are the same prompts: asked once, both answered.
    assert ids == [f"toy-train-{i}-0" for i in range(6)]
    assert summary["splits"]["test"]["parsed"] == 6 and summary["splits"]["train"]["parsed"] == 6


def test_estimate_and_budget_use_batch_prices(tmp_path):
    task = make_toy_task(tmp_path, count=12)
    options = {"model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}
    normal = annotate(
        str(task),
        "openai",
        tmp_path / "a",
        splits=("train",),
        estimate=True,
        teacher_options=options,
    )
    batch = annotate(
        str(task),
        "openai-batch",
        tmp_path / "b",
        splits=("train",),
        estimate=True,
        teacher_options=options,
    )
    assert batch["pricing"] == "batch"
    assert batch["total"]["cost_usd_max"] == pytest.approx(
        normal["total"]["cost_usd_max"] / 2, rel=1e-3
    )
    # A table's own batch prices win over the half.
    table = tmp_path / "prices.yaml"
    table.write_text(
        "gpt-4o-mini: {prompt: 1.0, completion: 1.0, batch_prompt: 0.1, batch_completion: 0.1}\n"
    )
    own = annotate(
        str(task),
        "openai-batch",
        tmp_path / "c",
        splits=("train",),
        estimate=True,
        prices=table,
        teacher_options=options,
    )
    tokens = own["total"]["prompt_tokens"] + own["total"]["completion_tokens_max"]
    assert own["total"]["cost_usd_max"] == pytest.approx(tokens * 0.1 / 1e6, rel=1e-3)
    # A budget sends only the requests whose most fits, at batch prices.
    per_request = batch["total"]["cost_usd_max"] / 12
    with batch_server() as (url, state):
        summary = run_batch(task, tmp_path / "d", url, max_tokens=256)
        limited = annotate(
            str(task),
            "openai-batch",
            tmp_path / "e",
            splits=("train",),
            quiet=True,
            max_cost=per_request * 5.5,
            teacher_options={"model": "gpt-4o-mini", "base_url": url, "poll_interval": 0.01},
        )
    assert summary["splits"]["train"]["parsed"] == 12
    assert len(uploaded(state)[1]) == 5
    assert limited["store"]["asked"] == 5 and limited["store"]["not_asked"] == 7
    assert limited["usage"]["cost_usd"] <= per_request * 5.5


def test_a_run_stopped_while_polling_resumes_its_batch_and_finds_a_lost_id(tmp_path, monkeypatch):
    """Stopped after the batch was created (Ctrl-C while polling); the id then erased from
    the state, as if the kill came between creating the batch and recording it: the rerun
    finds the batch by its input file and creates none."""
    task = make_toy_task(tmp_path, count=8)
    out = tmp_path / "out"

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with batch_server(BatchState(hold=True)) as (url, state):
        monkeypatch.setattr(openai_batch.time, "sleep", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_batch(task, out, url)
        monkeypatch.undo()
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        recorded = json.loads((out / "batches.json").read_text())
        assert recorded["batches"][0]["id"] == "batch_1" and state.created == 1
        recorded["batches"][0]["id"] = None
        (out / "batches.json").write_text(json.dumps(recorded))
        state.hold = False
        summary = run_batch(task, out, url)
    assert state.created == 1 and state.uploads == 1
    assert summary["backend"]["batches_resumed"] == ["batch_1"]
    assert summary["splits"]["train"]["parsed"] == 8


def test_kill_9_after_batch_creation_then_rerun_resumes_the_same_batch(tmp_path):
    task = make_toy_task(tmp_path, count=10)
    out = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": SECRET, "PYTHONPATH": str(REPO)}
    with batch_server(BatchState(hold=True, plan=FAULTS.get)) as (url, state):
        command = [
            sys.executable,
            "-m",
            "stepdistill.cli",
            "annotate",
            "--task",
            str(task),
            "--teacher",
            "openai-batch",
            "--model",
            "gpt-4o-mini",
            "--base-url",
            url,
            "--option",
            "poll_interval=0.02",
            "--output",
            str(out),
            "--splits",
            "train",
        ]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        assert state.batch_created.wait(60), "the batch was never created"
        deadline = time.monotonic() + 30
        while not state.retrieves and time.monotonic() < deadline:
            time.sleep(0.02)  # polling: the id is recorded
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (out / "train.jsonl").exists(), "killed before the end, as intended"
        assert json.loads((out / "batches.json").read_text())["batches"][0]["id"] == "batch_1"
        state.hold = False
        result = subprocess.run(
            [*command, "--retry-failed"], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]
    assert state.created == 1 and state.uploads == 1  # no second batch, nothing paid twice
    assert "resumed batch_1" in result.stdout
    assert sum(state.live.values()) == 4  # the failed rows, on the normal API
    rows = read_jsonl(out / "train.jsonl")
    assert len(rows) == 10 and all(row["parse_status"] == "ok" for row in rows)
    assert files_containing(tmp_path, SECRET) == []


def test_unknown_option_and_unreadable_state_are_one_line_errors(tmp_path):
    task = make_toy_task(tmp_path, count=2)
    with pytest.raises(ValueError, match="unknown option.*polling"):
        annotate(
            str(task), "openai-batch", tmp_path / "o", teacher_options={"model": "m", "polling": 1}
        )
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "batches.json").write_text("{not json")
    with (
        batch_server() as (url, _),
        pytest.raises(ValueError, match=r"batches.json:1: batch state is not JSON"),
    ):
        run_batch(task, tmp_path / "p", url)


def test_an_unreadable_output_line_fails_only_its_row_and_is_reported(tmp_path):
    task = make_toy_task(tmp_path, count=6)
    with batch_server(BatchState(plan={"toy-train-2-0": "garbage"}.get)) as (url, _):
        summary = run_batch(task, tmp_path / "out", url)
    split = summary["splits"]["train"]
    assert split["parsed"] == 5 and split["failed_ids"] == ["train-2"]
    assert split["failures"] == {"batch failed: no result (batch completed)": 1}
    assert summary["backend"]["unreadable_lines"] == {"batch_1": 1}


def test_more_requests_than_a_batch_holds_make_several_batches_polled_together(tmp_path):
    task = make_toy_task(tmp_path, count=12)
    with batch_server(BatchState(seed=1)) as (url, state):
        summary = run_batch(task, tmp_path / "out", url, max_batch_requests=5)
    assert state.created == 3 and [len(lines) for lines in uploaded(state)] == [5, 5, 2]
    assert summary["backend"]["batches_created"] == ["batch_1", "batch_2", "batch_3"]
    assert summary["splits"]["train"]["parsed"] == 12
