"""Replay teacher: the stored continuations of a real LLM (the paper's PaLM-540B outputs).

The task's ``teacher_outputs`` lists, per source split, files of continuations aligned
with the rows of that split's file: a JSON list of strings, or (with the task's
``teacher_output_field`` naming the field that holds the continuation) a JSON list of
objects or a JSONL file of objects, such as a third party's ``{"input", "gen_label",
"org_label"}`` rows. A file that yields no continuation is an error naming the file, its
first bad row and what was expected; nothing is silently turned into empty answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..data import DataError, data_dir, expand_braces, expand_path
from ..tasks import Task
from . import Completion, Request, Teacher


class ReplayTeacher(Teacher):
    reads_data = True
    stored = True

    """Answers each request with the stored continuation for its example's row."""

    def __init__(self, task: Task, data: str | Path | None = None):
        if not task.teacher_outputs:
            raise DataError(
                f"task {task.name} has no stored teacher outputs (teacher_outputs in its YAML) "
                "to replay; ask a live teacher instead, e.g. --teacher openai --model NAME "
                "--base-url URL"
            )
        self.name = task.replay_name
        self.task = task
        self._data = data
        self._outputs: dict[str, list[str | None]] = {}

    def outputs(self, split: str) -> list[str | None]:
        if split not in self._outputs:
            if split not in self.task.teacher_outputs:
                raise DataError(
                    f"task {self.task.name} has no stored teacher outputs for split {split!r}"
                )
            root = (
                data_dir(self._data)
                if any("{data}" in f for f in self.task.teacher_outputs[split])
                else None
            )
            rows: list[str | None] = []
            for template in self.task.teacher_outputs[split]:
                for name in expand_braces(template):
                    path = expand_path(name, self.task, root)
                    rows.extend(read_outputs(path, self.task.teacher_output_field))
            self._outputs[split] = rows
        return self._outputs[split]

    def complete(self, requests: Sequence[Request]) -> Iterator[Completion]:
        for request in requests:
            rows = self.outputs(request.example.source_split)
            index = request.example.source_index
            if index >= len(rows):
                yield Completion(request, None, error=f"no stored output for row {index}")
            else:
                text = rows[index]
                yield Completion(request, text if isinstance(text, str) else None)


def read_outputs(path: Path, field: str | None) -> list[str | None]:
    """The continuations of one stored-outputs file, in row order (``None`` for a row
    without one). ``field`` names the continuation of each object; ``None``: a list of
    strings. Refuses a file in which no row has one, naming its first bad row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: stored teacher outputs not found") from None
    try:
        chunk = json.loads(text)
        lines = None
    except json.JSONDecodeError as error:
        if path.suffix != ".jsonl" and not text.lstrip().startswith("{"):
            raise DataError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
        chunk, lines = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    chunk.append(json.loads(line))
                except json.JSONDecodeError as line_error:
                    raise DataError(f"{path}:{number}: invalid JSON: {line_error.msg}") from None
                lines.append(number)
    if isinstance(chunk, dict) and lines is None:
        chunk, lines = [chunk], [1]  # a JSONL file of one row
    if not isinstance(chunk, list):
        raise DataError(f"{path}: expected a JSON list (or JSONL rows) of teacher outputs")
    expected = (
        "a JSON list of strings (or set teacher_output_field in the task to the field of "
        "each object that holds the continuation)"
        if field is None
        else f"objects with a text field {field!r} (teacher_output_field)"
    )
    outputs: list[str | None] = []
    first_bad: tuple[int, Any] | None = None
    for index, row in enumerate(chunk):
        value = row if field is None else (row.get(field) if isinstance(row, dict) else None)
        if isinstance(value, str):
            outputs.append(value)
            continue
        outputs.append(None)
        if first_bad is None:
            first_bad = (lines[index] if lines else index + 1, row)
    if chunk and first_bad is not None and not any(o is not None for o in outputs):
        where, row = first_bad
        keys = f" (fields: {', '.join(map(str, row))})" if isinstance(row, dict) else ""
        raise DataError(
            f"{path}: no usable teacher continuation in {len(chunk)} rows: "
            f"{'line' if lines else 'row'} {where} is {type(row).__name__} {json.dumps(row)[:80]}"
            f"{keys}; expected {expected}"
        )
    return outputs
