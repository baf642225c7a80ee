"""Batch predict: a trained student labels a JSONL / CSV file of any size.

Records are read lazily, predicted in chunks and appended to the output one line
each, flushed after every chunk: an interrupted job loses at most one chunk, and
running the same command again skips the ids already in the output. A last line
torn by a crash is cut off before appending. The whole input is checked (JSON, ids,
template fields) before the first line is written, so a bad input file leaves no
partial output.

Each output line is ``{"id", "prediction", "raw"}`` (plus ``"rationale"``). The id is
the task's id field, else the record's ``id`` field, else the row's position (0-based).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .data import DataError, read_records, record_id
from .gguf_engine import GGUFStudent
from .io import cut_torn_tail
from .student import Student

ENGINES = ("torch", "llama.cpp")
"""``torch``: the run's model through ``Student``; ``llama.cpp``: a GGUF export of it
(``export --format gguf``) through ``gguf_engine.GGUFStudent``, labels only, batch 1."""


def predict(
    run_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    rationale: bool = False,
    chunk_size: int = 256,
    batch_size: int | None = None,
    limit: int | None = None,
    progress: bool = True,
    device: str | None = None,
    int8: bool = False,
    engine: str = "torch",
    gguf: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Append predictions for the records of ``input_path`` not yet in ``output_path``
    (``engine`` ``llama.cpp``: by the GGUF file ``gguf`` exported from the run).

    Returns ``{"output", "records", "skipped", "predicted"}``.
    """
    from tqdm.auto import tqdm

    output_path = Path(output_path)
    student: Student | GGUFStudent
    if engine == "llama.cpp":
        if gguf is None:
            raise ValueError(
                "--engine llama.cpp needs --gguf FILE (stepdistill export --format gguf)"
            )
        if int8 or device not in (None, "cpu"):
            raise ValueError(
                "--engine llama.cpp runs the GGUF file on the CPU: drop --int8 / --device"
            )
        student = GGUFStudent.load(run_dir, gguf, threads=threads)
    elif engine == "torch":
        if gguf is not None:
            raise ValueError("--gguf is the llama.cpp engine's file: add --engine llama.cpp")
        student = Student.load(
            run_dir, batch_size=batch_size, device=device, int8=int8, threads=threads
        )
    else:
        raise ValueError(f"unknown --engine {engine!r}; choose one of {', '.join(ENGINES)}")
    done = existing_ids(output_path)
    if rationale:
        student.check_rationale()  # before any row is read or written
    id_field = student.task.id_field or "id"
    # A first pass checks every row (JSON, ids, fields) and counts them for the progress
    # bar before any model time is spent or any line is written: a bad file leaves no
    # partial output. Reading and formatting are cheap next to generation.
    total = 0
    for _, record, where in _rows(input_path, id_field, limit):
        student.format(record, where)
        total += 1
    skipped = predicted = 0
    output_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        output_path.open("a", encoding="utf-8") as out,
        tqdm(total=total, desc="predict", disable=not progress, unit="row") as bar,
    ):
        for chunk in chunks(_rows(input_path, id_field, limit), chunk_size):
            todo = [
                (row_id, record, where) for row_id, record, where in chunk if row_id not in done
            ]
            skipped += len(chunk) - len(todo)
            if todo:
                texts = [student.format(record, where) for _, record, where in todo]
                for (row_id, _, _), prediction in zip(
                    todo, student.predict(texts, rationale=rationale), strict=True
                ):
                    row = {"id": row_id, "prediction": prediction.label, "raw": prediction.raw}
                    if prediction.rationale is not None:
                        row["rationale"] = prediction.rationale
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                out.flush()
                predicted += len(todo)
            bar.update(len(chunk))
    return {
        "output": str(output_path),
        "records": skipped + predicted,
        "skipped": skipped,
        "predicted": predicted,
    }


def _rows(
    path: str | Path, id_field: str, limit: int | None
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(id, record, "file:line") per row; duplicate ids are an error (resume relies on them)."""
    seen: set[str] = set()
    for index, (line, record) in enumerate(read_records(path)):
        if limit is not None and index >= limit:
            return
        where = f"{path}:{line}"
        row_id = record_id(record, id_field, where) or str(index)
        if row_id in seen:
            raise DataError(f"{where}: duplicate id {row_id!r}")
        seen.add(row_id)
        yield row_id, record, where


def chunks(rows: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def existing_ids(path: Path) -> set[str]:
    """Ids already in an output file, after cutting off a torn (unterminated or
    unparseable) last line; any other bad line is an error, not silently redone."""
    if not path.is_file():
        return set()
    cut_torn_tail(path)
    ids: set[str] = set()
    for number, line in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            raise DataError(
                f"{path}:{number}: not a prediction row; use another --output or fix the file"
            ) from None
    return ids
