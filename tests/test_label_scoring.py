"""label_scoring: candidates — validation and test of a closed-label-set task pick the most
likely label with one forward pass; always a label of the set, the same answers as
``Student.choose``, and a clear error for a free-text task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stepdistill.config import make_config
from stepdistill.io import read_jsonl
from stepdistill.student import Student
from stepdistill.train import train

LABELS = ["entailment", "neutral", "contradiction"]


def write_nli(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [
        {
            "id": f"n{i}",
            "premise": f"A man plays {i}.",
            "hypothesis": f"He plays {i % 3}.",
            "label": LABELS[i % 3],
        }
        for i in range(24)
    ]
    for name, split in (("train", rows[:16]), ("test", rows[16:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    (folder / "task.yaml").write_text(
        "name: tiny-nli\nfiles: {train: train.jsonl, test: test.jsonl}\n"
        "validation: {from: train, fraction: 0.25}\nid_field: id\nlabel_field: label\n"
        'input_template: "premise: {premise}\\nhypothesis: {hypothesis}"\n'
        f"labels: {LABELS}\n"
    )
    return folder / "task.yaml"


def config_for(task: Path, student: Path, tmp_path: Path, **values):
    return make_config(
        {
            "task": str(task),
            "mode": "standard",
            "student": str(student),
            "max_steps": 2,
            "batch_size": 4,
            "bf16": False,
            "label_scoring": "candidates",
            "output_dir": str(tmp_path / "runs"),
            **values,
        }
    )


def test_candidate_scoring_answers_from_the_label_set_like_student_choose(tiny_causal, tmp_path):
    task = write_nli(tmp_path / "task")
    metrics = train(config_for(task, tiny_causal, tmp_path), quiet=True)
    rows = read_jsonl(Path(metrics["run_dir"]) / "predictions" / "test.jsonl")
    assert len(rows) == 8 and all(row["prediction"] in LABELS for row in rows)
    student = Student.load(metrics["run_dir"])
    chosen = student.choose([row["input"] for row in rows])
    assert [c.label for c in chosen] == [row["prediction"] for row in rows]
    # predict (and so serve and `stepdistill predict`) reads labels the way the run did
    assert [p.label for p in student.predict([row["input"] for row in rows])] == [
        row["prediction"] for row in rows
    ]


def test_candidate_scoring_is_refused_for_a_mode_that_writes_more_than_the_label():
    from stepdistill.config import ConfigError

    with pytest.raises(ConfigError, match="mode label-first writes more"):
        make_config({"mode": "label-first", "label_scoring": "candidates"})


def test_candidate_scoring_needs_a_closed_label_set(tiny_causal, tmp_path):
    from test_pinned import write_task

    task = write_task(tmp_path / "math")
    config = config_for(
        task, tiny_causal, tmp_path, annotations=str(tmp_path / "math" / "annotations")
    )
    with pytest.raises(ValueError, match="has no label set .* use label_scoring generate"):
        train(config, quiet=True)
    assert not (tmp_path / "runs").exists()  # refused before any run folder or training
