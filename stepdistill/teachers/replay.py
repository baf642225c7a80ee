"""Replay teacher: the stored continuations of a real LLM (the paper's PaLM-540B outputs).

The task's ``teacher_outputs`` lists, per source split, files of continuations aligned
with the rows of that split's file: a JSON list of strings, or (with the task's
``teacher_output_field`` naming the field that holds the continuation) a JSON list of
objects or a JSONL file of objects, such as a third party's ``{"input", "gen_label",
"org_label"}`` rows. A file that yields no continuation is an error naming the file, its
first bad row and what was expected; nothing is silently turned into empty answers.

A Batch API output file (``{"custom_id", "response", "error"}`` lines, as
``--teacher openai-batch`` downloads, or one you already have) is replayed too: named in
``teacher_outputs`` (recognised by its lines) or given with ``--option batch_output=FILE``
(one file for every split, or ``{train: a.jsonl, test: b.jsonl}``). Its lines are joined
to rows by ``custom_id`` - never by position - read with the task's
``teacher_custom_id`` pattern or ``--option custom_id=PATTERN`` (default
``{task}-{split}-{row}-{sample}``); a failed line (``error``, a null response, a non-200
status) and a row without a line are answered as failures, counted in the summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..data import DataError, data_dir, expand_braces, expand_path
from ..tasks import Task
from . import Completion, Request, Teacher
from .batch_format import (
    DEFAULT_CUSTOM_ID,
    BatchResult,
    CustomIdPattern,
    looks_like_batch_output,
    parse_lines,
)


class ReplayTeacher(Teacher):
    reads_data = True
    stored = True

    """Answers each request with the stored continuation for its example's row."""

    def __init__(
        self,
        task: Task,
        data: str | Path | None = None,
        batch_output: str | list[str] | dict[str, str | list[str]] | None = None,
        custom_id: str | None = None,
    ):
        if not task.teacher_outputs and not batch_output:
            raise DataError(
                f"task {task.name} has no stored teacher outputs (teacher_outputs in its YAML) "
                "to replay; give a Batch API output file (--option batch_output=FILE) or ask a "
                "live teacher instead, e.g. --teacher openai --model NAME --base-url URL"
            )
        self.name = task.replay_name
        self.task = task
        self._data = data
        self._outputs: dict[str, list[str | None]] = {}
        self.pattern = CustomIdPattern(custom_id or task.teacher_custom_id or DEFAULT_CUSTOM_ID)
        # The user's own files (not a task file's): read where they are.
        self._batch_files: dict[str | None, list[Path]] = {}
        if isinstance(batch_output, dict):
            self._batch_files = {
                str(split): [Path(f) for f in ([files] if isinstance(files, str) else files)]
                for split, files in batch_output.items()
            }
        elif batch_output:
            files = [batch_output] if isinstance(batch_output, str) else batch_output
            self._batch_files = {None: [Path(f) for f in files]}
        self._batch: dict[str, dict[tuple[int, int | None], BatchResult] | None] = {}

    def task_files(self, split: str) -> list[Path]:
        """The task's stored-output files of one split."""
        if split not in self.task.teacher_outputs:
            raise DataError(
                f"task {self.task.name} has no stored teacher outputs for split {split!r}"
            )
        root = (
            data_dir(self._data)
            if any("{data}" in f for f in self.task.teacher_outputs[split])
            else None
        )
        return [
            expand_path(name, self.task, root)
            for template in self.task.teacher_outputs[split]
            for name in expand_braces(template)
        ]

    def batch_results(self, split: str) -> dict[tuple[int, int | None], BatchResult] | None:
        """(row, sample) -> the batch line of one split (sample None: the pattern has no
        sample), when the split's outputs are Batch API output files; else None."""
        if split not in self._batch:
            if self._batch_files:
                paths = self._batch_files.get(split, self._batch_files.get(None))
                if paths is None:
                    raise DataError(
                        f"batch_output names no file for split {split!r} (it names "
                        f"{', '.join(str(s) for s in self._batch_files)})"
                    )
            else:
                paths = self.task_files(split)
                if not (paths and is_batch_file(paths[0])):
                    self._batch[split] = None
                    return None
            self._batch[split] = read_batch_outputs(paths, split, self.pattern)
        return self._batch[split]

    def outputs(self, split: str) -> list[str | None]:
        if split not in self._outputs:
            rows: list[str | None] = []
            for path in self.task_files(split):
                rows.extend(read_outputs(path, self.task.teacher_output_field))
            self._outputs[split] = rows
        return self._outputs[split]

    def complete(self, requests: Sequence[Request]) -> Iterator[Completion]:
        for request in requests:
            index = request.example.source_index
            batch = self.batch_results(request.example.source_split)
            if batch is not None:
                result = batch.get((index, request.sample)) or batch.get((index, None))
                if result is None:
                    yield Completion(
                        request,
                        None,
                        error=f"missing: no batch output line for row {index}"
                        + (f" sample {request.sample}" if request.sample else ""),
                    )
                else:
                    yield Completion(request, result.text, error=result.error)
                continue
            rows = self.outputs(request.example.source_split)
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


def is_batch_file(path: Path) -> bool:
    """Whether a stored-outputs file is a Batch API output file (by its first line)."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "")
    except FileNotFoundError:
        raise DataError(f"{path}: stored teacher outputs not found") from None
    return looks_like_batch_output(first)


def read_batch_outputs(
    paths: list[Path], split: str, pattern: CustomIdPattern
) -> dict[tuple[int, int | None], BatchResult]:
    """(row, sample) -> line, for the lines of one split (all lines when the pattern names
    no split). A later successful line of the same id replaces an earlier one (a retry),
    a failure never replaces a success. A custom_id the pattern cannot read is an error."""
    with_sample = "sample" in pattern.regex.groupindex
    results: dict[tuple[int, int | None], BatchResult] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DataError(f"{path}: batch output file not found") from None
        for result in parse_lines(text, path):
            parsed = pattern.parse(result.custom_id)
            if parsed is None:
                raise DataError(
                    f"{path}:{result.line}: custom_id {result.custom_id!r} does not match the "
                    f"custom_id pattern {pattern.text!r}; give yours with --option "
                    "custom_id=PATTERN (or teacher_custom_id in the task): a template such as "
                    "'{split}-{row}' or a regex with (?P<row>\\d+)"
                )
            line_split, row, sample = parsed
            if line_split is not None and line_split != split:
                continue
            key = (row, sample if with_sample else None)
            held = results.get(key)
            if held is None or result.text is not None:
                results[key] = result
    return results
