"""Replay teacher: the stored continuations of a real LLM (the paper's PaLM-540B outputs).

The task's ``teacher_outputs`` lists, per source split, JSON files holding a list of
continuation strings aligned with the rows of that split's file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..data import DataError, data_dir, expand_braces, expand_path
from ..tasks import Task
from . import Completion, Request, Teacher


class ReplayTeacher(Teacher):
    reads_data = True
    stored = True

    """Answers each request with the stored continuation for its example's row."""

    def __init__(self, task: Task, data: str | Path | None = None):
        self.name = "replay"
        self.task = task
        self._data = data
        self._outputs: dict[str, list[str]] = {}

    def outputs(self, split: str) -> list[str]:
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
            rows: list[str] = []
            for template in self.task.teacher_outputs[split]:
                for name in expand_braces(template):
                    path = expand_path(name, self.task, root)
                    try:
                        chunk = json.loads(path.read_text(encoding="utf-8"))
                    except FileNotFoundError:
                        raise DataError(f"{path}: stored teacher outputs not found") from None
                    except json.JSONDecodeError as error:
                        raise DataError(
                            f"{path}:{error.lineno}: invalid JSON: {error.msg}"
                        ) from None
                    if not isinstance(chunk, list):
                        raise DataError(f"{path}: expected a JSON list of strings")
                    rows.extend(chunk)
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
