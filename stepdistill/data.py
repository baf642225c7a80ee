"""Load a task's examples: read files (JSONL / JSON / CSV), carve validation, build inputs.

Every reading error names the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .tasks import Task, normalize_label

DATA_ENV = "STEPDISTILL_DATA"
SPLITS = ("train", "valid", "test")


class DataError(ValueError):
    """A data file is missing or malformed."""


@dataclass
class Example:
    """One example of a task, with where it came from."""

    id: str
    split: str
    input: str
    label: str | None
    source_split: str
    """The split of the file the row was read from (validation is carved from train)."""
    source_index: int
    """The row's position in that file: aligns it with stored teacher outputs."""
    record: dict[str, Any] = field(default_factory=dict, repr=False)


def data_dir(explicit: str | Path | None = None) -> Path:
    """The benchmark data folder: explicit path, else $STEPDISTILL_DATA, else ../shared/data."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    elif os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    else:
        candidates.append(Path.cwd().parent / "shared" / "data")
        candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data")
    for candidate in candidates:
        if (candidate / "dss").is_dir():
            return candidate
    raise DataError(
        "benchmark data not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + f". Expected a folder holding dss/<task>/... (the paper's released datasets/ with "
        f"PaLM outputs). Set {DATA_ENV}=/path/to/data or pass --data-dir."
    )


def expand_path(template: str, task: Task, data: Path | None) -> Path:
    if template.startswith("hf:"):
        return Path(template)
    if "{data}" in template:
        if data is None:
            raise DataError(f"task {task.name} needs the benchmark data folder")
        return Path(template.replace("{data}", str(data)))
    path = Path(template)
    return path if path.is_absolute() else task.base_dir / path


def expand_braces(template: str) -> list[str]:
    """``train_CoT_{0..2}.json`` -> three names (shell-style numeric ranges)."""
    match = re.search(r"\{(\d+)\.\.(\d+)\}", template)
    if not match:
        return [template]
    start, end = int(match.group(1)), int(match.group(2))
    head, tail = template[: match.start()], template[match.end() :]
    return [name for i in range(start, end + 1) for name in expand_braces(f"{head}{i}{tail}")]


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from JSON lines, a JSON list, or CSV with a header."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".csv":
        yield from _read_csv(path)
        return
    try:
        with path.open(encoding="utf-8") as handle:
            first = handle.read(1)
            while first and first.isspace():
                first = handle.read(1)
            handle.seek(0)
            if first == "[":
                try:
                    rows = json.load(handle)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
                for index, row in enumerate(rows):
                    if not isinstance(row, dict):
                        raise DataError(f"{path}: item {index + 1}: expected an object")
                    yield index + 1, row
                return
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(
                        f"{path}:{line_number}: invalid JSON ({error.msg} at column {error.colno})"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{line_number}: expected a JSON object per line")
                yield line_number, row
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start})") from None


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise DataError(f"{path}:1: empty CSV file (a header row is required)")
            start = reader.line_num + 1
            for row in reader:
                if None in row:
                    raise DataError(f"{path}:{start}: more values than header columns")
                if any(value is None for value in row.values()):
                    raise DataError(f"{path}:{start}: fewer values than header columns")
                yield start, row
                start = reader.line_num + 1
    except csv.Error as error:
        raise DataError(f"{path}: malformed CSV: {error}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid UTF-8 ({error.reason} at byte {error.start})") from None


def format_input(task: Task, record: dict[str, Any], where: str) -> str:
    try:
        return task.input_template.format_map(record)
    except KeyError as error:
        raise DataError(f"{where}: missing field {error.args[0]!r} (needed by the task's input template)") from None
    except (IndexError, TypeError, ValueError) as error:
        raise DataError(f"{where}: field does not fit the input template: {error}") from None


def gold_label(task: Task, record: dict[str, Any], where: str) -> str | None:
    if task.label_field is None:
        return None
    value = record.get(task.label_field)
    if value is None or value == "":
        return None  # an unlabeled row: the common case for a user's own training data
    if task.label_map is not None:
        mapped = task.label_map.get(value, task.label_map.get(str(value)))
        if mapped is None:
            raise DataError(f"{where}: label {value!r} is not one of {list(task.label_map)}")
        value = mapped
    label = normalize_label(str(value), task.normalize)
    if task.labels is not None and label not in task.labels:
        raise DataError(f"{where}: label {value!r} is not one of {task.labels}")
    return label


def read_split(task: Task, split: str, path: Path) -> list[Example]:
    """All rows of one file as examples (ids stable across runs)."""
    if str(path).startswith("hf:"):
        rows = enumerate(load_hub_split(str(path)), start=1)
    else:
        rows = read_records(path)
    examples: list[Example] = []
    seen: set[str] = set()
    for index, (line_number, record) in enumerate(rows):
        where = f"{path}:{line_number}"
        example_id = str(record[task.id_field]) if task.id_field and task.id_field in record else f"{split}-{index}"
        if example_id in seen:
            raise DataError(f"{where}: duplicate id {example_id!r}")
        seen.add(example_id)
        examples.append(
            Example(
                id=example_id,
                split=split,
                input=format_input(task, record, where),
                label=gold_label(task, record, where),
                source_split=split,
                source_index=index,
                record=record,
            )
        )
    return examples


def load_splits(task: Task, data: str | Path | None = None) -> dict[str, list[Example]]:
    """Train / valid / test examples of a task, validation carved where the files have none."""
    needs_data = any("{data}" in f for f in task.files.values())
    root = data_dir(data) if needs_data else None
    splits = {name: read_split(task, name, expand_path(file, task, root)) for name, file in task.files.items()}
    carve = task.validation
    if carve and "valid" not in splits:
        source = carve.get("from", "train")
        pool = splits[source]
        order = list(range(len(pool)))
        # A fixed permutation: the same validation set on every run and machine.
        random.Random(carve.get("seed", 0)).shuffle(order)
        size = int(carve["size"]) if "size" in carve else round(len(pool) * float(carve.get("fraction", 0.1)))
        held = set(order[:size])
        splits["valid"] = [pool[i] for i in sorted(held)]
        splits[source] = [pool[i] for i in range(len(pool)) if i not in held]
        for example in splits["valid"]:
            example.split = "valid"
    return splits


def load_hub_split(spec: str) -> list[dict[str, Any]]:
    """``hf:owner/name[@config]:split`` -> rows, for users who can reach the Hugging Face hub."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DataError("hub datasets need the 'datasets' package: pip install 'stepdistill[hub]'") from None
    _, rest = spec.split(":", 1)
    name, _, split = rest.rpartition(":")
    name, _, config = name.partition("@")
    dataset = datasets.load_dataset(name, config or None, split=split)
    return [dict(row) for row in dataset]
