"""The rationale dataset that ``annotate`` writes and training reads: one folder per
task and teacher (``annotations/<task>-<teacher>/``) with ``train.jsonl``,
``valid.jsonl``, ``test.jsonl`` (one row per example and sample: id, input, gold label,
teacher label, rationale, parse status, raw text) and ``summary.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import read_jsonl
from .metrics import is_correct
from .parse import OK, example_choices, parse_continuation
from .tasks import Task
from .teachers import Completion, teacher_label


def default_folder(task: Task, teacher: str) -> Path:
    """Where a task's rationales from a named teacher go unless a folder is given (the
    replay teacher is named after what it replays: ``annotations/svamp-palm-replay``)."""
    return Path("annotations") / f"{task.name}-{teacher_label(teacher, task)}"


def has_annotations(directory: str | Path) -> bool:
    return (Path(directory) / "train.jsonl").is_file()


def rationale_row(task: Task, completion: Completion, with_sample: bool = False) -> dict[str, Any]:
    """One row of the rationale dataset from one completion."""
    example = completion.request.example
    parsed = parse_continuation(completion.text, task, example_choices(task, example.record))
    return {
        "id": example.id,
        "split": example.split,
        **({"sample": completion.request.sample} if with_sample else {}),
        "input": example.input,
        "gold_label": example.label,
        "teacher_label": parsed.label,
        "rationale": parsed.rationale,
        "parse_status": parsed.status if completion.error is None else "error",
        "teacher_correct": None
        if example.label is None
        else is_correct(task, parsed.label, example.label),
        "raw": completion.text,
        **({"error": completion.error} if completion.error else {}),
    }


def load_annotations(directory: str | Path, split: str) -> dict[str, dict[str, Any]]:
    """id -> annotation row of one split of a rationale dataset (with several samples
    per example, the first parsed one)."""
    path = Path(directory) / f"{split}.jsonl"
    rows: dict[str, dict[str, Any]] = {}
    for row in read_jsonl(path):
        held = rows.get(row["id"])
        if held is None or (held.get("parse_status") != OK and row.get("parse_status") == OK):
            rows[row["id"]] = row
    return rows


def load_annotation_samples(directory: str | Path, split: str) -> list[dict[str, Any]]:
    """Every row of one split, several per example when samples were drawn: training
    can use each as an extra (input, rationale) pair."""
    return read_jsonl(Path(directory) / f"{split}.jsonl")
