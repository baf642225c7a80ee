"""One inference path: a run's recorded test predictions are exactly what ``Student``,
``stepdistill predict``, ``stepdistill evaluate`` and the server answer for the same inputs
(same generation code, same precision policy). Trained in bf16, where a second precision
policy would show: fp32 weights under autocast do not decode like bf16 weights."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import httpx
import pytest
from serve_helpers import running_server
from test_pinned import students, write_task

from stepdistill.cli import main
from stepdistill.config import make_config
from stepdistill.evaluate import evaluate
from stepdistill.io import read_jsonl
from stepdistill.student import Student
from stepdistill.train import train


@pytest.fixture(scope="module", params=["dss", "label-first"])
def run(request, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp(f"one-path-{request.param}")
    made = students(folder / "students")
    task = write_task(folder / "task")
    config = make_config(
        {
            "task": str(task),
            "mode": request.param,
            "student": str(made["causal"]),
            "annotations": str(folder / "task" / "annotations"),
            "batch_size": 4,
            "max_steps": 4,
            "learning_rate": 3e-3,
            "max_rationale_tokens": 24,
            "eval_batch_size": 4,
            "bf16": True,  # forced: the point is the bf16 policy (slow only where emulated)
            "output_dir": str(folder / "runs"),
            "run_name": "run",
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "bf16 asked for without native bf16"
        return Path(train(config, quiet=True)["run_dir"])


def recorded(run: Path) -> list[dict]:
    return read_jsonl(run / "predictions" / "test.jsonl")


def test_student_answers_as_the_run_was_tested(run):
    rows = recorded(run)
    answers = Student.load(run).predict([row["input"] for row in rows])
    assert [a.raw for a in answers] == [row["raw"] for row in rows]
    assert [a.label for a in answers] == [row["prediction"] for row in rows]


def test_predict_command_and_evaluate_give_the_recorded_answers(run, tmp_path):
    rows = recorded(run)
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": r["id"], "input": r["input"]}) + "\n" for r in rows)
    )
    out = tmp_path / "out.jsonl"
    arguments = ["predict", str(run), "--input", str(source), "--output", str(out)]
    assert main([*arguments, "--chunk-size", str(len(rows))]) == 0
    assert [r["raw"] for r in read_jsonl(out)] == [row["raw"] for row in rows]
    result = evaluate(run)
    again = read_jsonl(run / "eval" / "test.jsonl")
    assert [r["raw"] for r in again] == [row["raw"] for row in rows]
    metrics = json.loads((run / "metrics.json").read_text())
    assert result["accuracy"] == metrics["test_accuracy"]


def test_the_server_answers_as_the_run_was_tested(run):
    rows = recorded(run)
    with running_server(Student.load(run)) as server:
        response = httpx.post(
            f"{server.url}/v1/predict", json={"inputs": [r["input"] for r in rows]}, timeout=60
        )
    assert response.status_code == 200
    assert [p["raw"] for p in response.json()["predictions"]] == [row["raw"] for row in rows]


@pytest.mark.slow
def test_a_real_student_answers_as_its_run_was_tested(tmp_path):
    """SmolLM2-135M in bf16 (2 steps on the tiny task): at this size fp32 weights under
    autocast and bf16 weights decode differently, so only one policy passes this."""
    task = write_task(tmp_path / "task", test_size=160)
    config = make_config(
        {
            "task": str(task),
            "mode": "label-first",
            "annotations": str(tmp_path / "task" / "annotations"),
            "batch_size": 8,
            "max_steps": 2,
            "max_rationale_tokens": 24,
            "bf16": True,
            "output_dir": str(tmp_path / "runs"),
            "run_name": "run",
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = Path(train(config, quiet=True)["run_dir"])
    rows = recorded(run)
    answers = Student.load(run).predict([row["input"] for row in rows])
    assert [a.raw for a in answers] == [row["raw"] for row in rows]
