"""Replaying a Batch API output file the user already has: joined by custom_id (never
by position), failed and missing rows reported, the same teacher accuracy as the same
continuations given as a plain list, less the failed rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from batch_helpers import BatchState, batch_server
from teacher_helpers import SECRET, make_toy_task, toy_answer

from stepdistill.annotate import annotate, make_requests
from stepdistill.cli import main
from stepdistill.data import load_splits
from stepdistill.errors import DataError
from stepdistill.io import read_jsonl
from stepdistill.tasks import load_task


def continuations(task_path: Path) -> list[str]:
    """The scripted teacher's answer to each train row, in row order."""
    task = load_task(str(task_path))
    requests = make_requests(task, load_splits(task)["train"])
    return [toy_answer(r.prompt) for r in requests]


def output_line(cid: str, text: str | None, fault: str | None = None) -> dict:
    if fault == "error":
        return {
            "custom_id": cid,
            "response": None,
            "error": {"code": "server_error", "message": "x"},
        }
    if fault == "status":
        return {
            "custom_id": cid,
            "response": {"status_code": 500, "body": {"error": {"message": "boom"}}},
            "error": None,
        }
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    return {
        "id": "r",
        "custom_id": cid,
        "response": {"status_code": 200, "body": body},
        "error": None,
    }


def write_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def replay(task: Path, out: Path, **options) -> dict:
    return annotate(
        str(task), "replay", out, splits=("train",), quiet=True, teacher_options=options
    )


def test_batch_output_gives_the_plain_list_accuracy_less_the_failed_rows(tmp_path):
    task = make_toy_task(tmp_path, count=20)
    texts = continuations(task)
    failed = {4: "error", 11: "status"}
    missing = {15}
    lines = [
        output_line(f"toy-train-{i}-0", text, failed.get(i))
        for i, text in enumerate(texts)
        if i not in missing
    ]
    random.Random(0).shuffle(lines)  # output order is not input order
    batch_file = write_lines(tmp_path / "batch_output.jsonl", lines)
    (tmp_path / "plain.json").write_text(json.dumps(texts))
    # The plain list with the failed and missing rows left out (null).
    (tmp_path / "holes.json").write_text(
        json.dumps([None if i in failed or i in missing else t for i, t in enumerate(texts)])
    )
    base = (tmp_path / "toy.yaml").read_text()

    def with_outputs(name: str) -> Path:
        path = tmp_path / f"toy-{name}.yaml"
        path.write_text(base + f"teacher_outputs: {{train: [{name}]}}\n")
        return path

    plain = replay(with_outputs("plain.json"), tmp_path / "plain")["splits"]["train"]
    holes = replay(with_outputs("holes.json"), tmp_path / "holes")["splits"]["train"]
    batch = replay(task, tmp_path / "batch", batch_output=str(batch_file))["splits"]["train"]
    # The same file named in the task YAML: recognised by its lines.
    named = replay(with_outputs("batch_output.jsonl"), tmp_path / "named")["splits"]["train"]

    plain_rows = read_jsonl(tmp_path / "plain" / "train.jsonl")
    correct_lost = sum(plain_rows[i]["teacher_correct"] for i in [*failed, *missing])
    assert batch["teacher_correct"] == plain["teacher_correct"] - correct_lost
    assert batch["teacher_correct"] == holes["teacher_correct"] == named["teacher_correct"]
    assert batch["teacher_accuracy"] == holes["teacher_accuracy"]
    batch_rows = read_jsonl(tmp_path / "batch" / "train.jsonl")
    for index, (row, reference) in enumerate(zip(batch_rows, plain_rows, strict=True)):
        if index not in failed and index not in missing:
            assert row["teacher_label"] == reference["teacher_label"]
            assert row["raw"] == reference["raw"]
    assert batch["failures"] == {
        "batch failed: server_error": 1,
        "batch failed: status 500": 1,
        "missing": 1,
    }
    assert batch["failed_ids"] == ["train-4", "train-11", "train-15"]


def test_own_patterns_template_and_regex(tmp_path):
    task = make_toy_task(tmp_path, count=6)
    texts = continuations(task)
    template = write_lines(
        tmp_path / "a.jsonl", [output_line(f"q{i}", t) for i, t in enumerate(texts)]
    )
    summary = replay(task, tmp_path / "a", batch_output=str(template), custom_id="q{row}")
    assert summary["splits"]["train"]["parsed"] == 6
    regex = write_lines(
        tmp_path / "b.jsonl",
        [output_line(f"req-{i:04d}-train", t) for i, t in enumerate(texts)]
        + [output_line("req-0000-test", "ignored: another split")],
    )
    summary = replay(
        task, tmp_path / "b", batch_output=str(regex), custom_id=r"req-(?P<row>\d+)-(?P<split>\w+)"
    )
    assert summary["splits"]["train"]["parsed"] == 6
    assert [r["raw"] for r in read_jsonl(tmp_path / "b" / "train.jsonl")] == texts
    # In the task file: teacher_custom_id.
    yaml = tmp_path / "own.yaml"
    yaml.write_text(
        (tmp_path / "toy.yaml").read_text()
        + "teacher_outputs: {train: [a.jsonl]}\nteacher_custom_id: 'q{row}'\n"
    )
    assert replay(yaml, tmp_path / "c")["splits"]["train"]["parsed"] == 6


def test_the_output_of_an_openai_batch_run_replays_to_the_same_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    task = make_toy_task(tmp_path, count=10)
    with batch_server(BatchState(plan={"toy-train-2-0": "error"}.get)) as (url, _):
        live = annotate(
            str(task),
            "openai-batch",
            tmp_path / "live",
            splits=("train",),
            quiet=True,
            teacher_options={"model": "m", "base_url": url, "poll_interval": 0.01},
        )["splits"]["train"]
    files = [
        str(tmp_path / "live" / f"batch-batch_1-{kind}.jsonl") for kind in ("output", "errors")
    ]
    replayed = replay(task, tmp_path / "replayed", batch_output=files)["splits"]["train"]
    assert replayed["teacher_correct"] == live["teacher_correct"]
    assert replayed["failures"] == live["failures"] == {"batch failed: server_error": 1}


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    task = make_toy_task(tmp_path, count=3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(output_line("toy-train-0-0", "x")) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: batch output line is not JSON"):
        replay(task, tmp_path / "o", batch_output=str(bad))
    other = write_lines(tmp_path / "other.jsonl", [output_line("item_7", "x")])
    with pytest.raises(DataError, match=r"other.jsonl:1: custom_id 'item_7' does not match"):
        replay(task, tmp_path / "o", batch_output=str(other))
    with pytest.raises(DataError, match=r"unknown field\(s\) \{index\}"):
        replay(task, tmp_path / "o", batch_output=str(other), custom_id="item_{index}")
    with pytest.raises(DataError, match=r"no \{row\}"):
        replay(task, tmp_path / "o", batch_output=str(other), custom_id="item")
    # From the command line: one line, the file and the line.
    code = main(
        [
            "annotate",
            "--task",
            str(task),
            "--splits",
            "train",
            "--option",
            f"batch_output={bad}",
            "--output",
            str(tmp_path / "o"),
        ]
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert (
        code == 2 and error.startswith("stepdistill annotate: error: ") and "bad.jsonl:2:" in error
    )
