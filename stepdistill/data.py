"""Load a task's examples: read files (JSONL / JSON / CSV), carve validation, build inputs.

Every reading error names the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import hf_data
from .errors import DataError
from .tasks import Task, normalize_label

DATA_ENV = "STEPDISTILL_DATA"
SPLITS = ("train", "valid", "test")


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


ALLOWED_DIRS_ENV = "STEPDISTILL_ALLOWED_DIRS"
"""Folders (separated by ``os.pathsep``) that a task file may read data from besides its
own folder and the benchmark data folder: set by the user, never by a task file."""

MAX_EXPANDED_NAMES = 10_000
"""Most file names one ``{a..b}`` pattern may expand to (a hostile ``{0..99999999}``
would otherwise build a list of 10^8 names)."""


def expand_path(template: str, task: Task, data: Path | None) -> Path:
    """The file a task names. A task file may only point inside its own folder (or, with
    ``{data}``, the benchmark data folder): ``../../etc/passwd``, absolute paths and
    symlinks that lead elsewhere are refused unless the user lists the folder in
    ``$STEPDISTILL_ALLOWED_DIRS``, so a shared task file cannot quietly copy any readable
    file into annotations or a run."""
    if template.startswith("hf:"):
        return Path(template)
    if "{data}" in template:
        if data is None:
            raise DataError(f"task {task.name} needs the benchmark data folder")
        path, root = Path(template.replace("{data}", str(data))), data
    else:
        path, root = Path(template), task.base_dir
        path = path if path.is_absolute() else root / path
    _check_inside(path, root, task)
    return path


def _check_inside(path: Path, root: Path, task: Task) -> None:
    resolved = path.resolve()  # follows symlinks: a link out of the folder is out
    allowed = [root] + [
        Path(d) for d in os.environ.get(ALLOWED_DIRS_ENV, "").split(os.pathsep) if d
    ]
    if any(resolved.is_relative_to(folder.resolve()) for folder in allowed):
        return
    raise DataError(
        f"{task.source or 'task ' + task.name}: file {str(path)!r} is outside the task's folder "
        f"{str(root.resolve())!r}; refused. To allow it, add its folder to ${ALLOWED_DIRS_ENV}."
    )


def expand_braces(template: str) -> list[str]:
    """``train_CoT_{0..2}.json`` -> three names (shell-style numeric ranges), at most
    ``MAX_EXPANDED_NAMES`` in all."""
    ranges = re.findall(r"\{(\d{1,9})\.\.(\d{1,9})\}", template)
    count = 1
    for start, end in ranges:
        count *= max(0, int(end) - int(start) + 1)
        if count > MAX_EXPANDED_NAMES:
            raise DataError(
                f"{template!r} expands to more than {MAX_EXPANDED_NAMES} file names; refused"
            )
    return _expand(template)


def _expand(template: str) -> list[str]:
    match = re.search(r"\{(\d{1,9})\.\.(\d{1,9})\}", template)
    if not match:
        return [template]
    start, end = int(match.group(1)), int(match.group(2))
    head, tail = template[: match.start()], template[match.end() :]
    return [name for i in range(start, end + 1) for name in _expand(f"{head}{i}{tail}")]


def read_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) from JSON lines, a JSON list, or CSV with a header.

    The line number is the file's physical line where the record starts (also for a
    CSV record with quoted newlines and for an item of a JSON list). Files are UTF-8;
    a byte-order mark is accepted and dropped. Blank lines of a JSON-lines file are
    skipped. Anything else that is not a record is an error naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix.lower() == ".csv":
            yield from _read_csv(path)
            return
        with path.open(encoding="utf-8-sig") as handle:
            first = handle.read(1)
            while first and first.isspace():
                first = handle.read(1)
            handle.seek(0)
            if first == "[":
                yield from _read_json_list(path, handle.read())
                return
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                yield (
                    line_number,
                    _json_object(path, line_number, line, last=not line.endswith("\n")),
                )
    except UnicodeDecodeError:
        raise _utf8_error(path) from None


def _json_object(path: Path, line_number: int, line: str, last: bool) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        truncated = "; the file ends mid-line (truncated?)" if last else ""
        raise DataError(
            f"{path}:{line_number}: invalid JSON ({error.msg} at column {error.colno}){truncated}"
        ) from None
    except RecursionError:
        raise DataError(f"{path}:{line_number}: JSON nested too deeply") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{line_number}: expected a JSON object per line, got {_kind(row)}")
    if "\\u" in line and _has_lone_surrogate(row):
        raise DataError(
            f"{path}:{line_number}: text with an invalid \\u escape (a lone UTF-16 surrogate)"
        )
    return row


_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _skip_space(text: str, position: int) -> int:
    match = _JSON_SPACE.match(text, position)
    return match.end() if match else position


def _read_json_list(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Items of a JSON list one by one, each with the line it starts on."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0) + 1  # past the "["
    line, counted = 1, 0

    def line_at(offset: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, offset)
        counted = offset
        return line

    def invalid(error: json.JSONDecodeError) -> DataError:
        return DataError(f"{path}:{error.lineno}: invalid JSON: {error.msg} (column {error.colno})")

    position = _skip_space(text, position)
    if text.startswith("]", position):
        position += 1
    else:
        while True:
            start = line_at(position)
            try:
                row, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise invalid(error) from None
            except RecursionError:
                raise DataError(f"{path}:{start}: JSON nested too deeply") from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}:{start}: expected a list of JSON objects, got {_kind(row)}"
                )
            if _has_lone_surrogate(row):
                raise DataError(
                    f"{path}:{start}: text with an invalid \\u escape (a lone UTF-16 surrogate)"
                )
            yield start, row
            position = _skip_space(text, position)
            if text.startswith("]", position):
                position += 1
                break
            if not text.startswith(",", position):
                where = (
                    "the file ends inside the list (truncated?)"
                    if position >= len(text)
                    else "expected ',' or ']'"
                )
                raise DataError(f"{path}:{line_at(position)}: invalid JSON: {where}")
            position = _skip_space(text, position + 1)
    position = _skip_space(text, position)
    if position != len(text):
        raise DataError(f"{path}:{line_at(position)}: invalid JSON: text after the end of the list")


def _kind(value: Any) -> str:
    """A JSON value's kind in JSON's words, for error messages."""
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _has_lone_surrogate(value: Any) -> bool:
    """True when a string in ``value`` holds an unpaired surrogate (from a "\\ud800"
    escape): such text cannot be written back as UTF-8, so it is refused on reading."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _utf8_error(path: Path) -> DataError:
    """Find the first line that is not UTF-8 (read again as bytes: decoding errors from a
    text stream carry no line number)."""
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as error:
                return DataError(
                    f"{path}:{line_number}: not valid UTF-8 ({error.reason} at byte {error.start + 1} of the line)"
                )
    return DataError(f"{path}: not valid UTF-8")


# Python's csv module refuses fields over 128 KiB; a long document is a legal input.
CSV_FIELD_LIMIT = 64 * 1024 * 1024


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        # strict: a stray or unclosed quote (e.g. a truncated file) is an error, not a
        # silently different value. A plain reader (not DictReader, which skips blank
        # lines out of sight) keeps each record's first physical line.
        reader = csv.reader(handle, strict=True)
        start = 1
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}:1: empty CSV file (a header row is required)")
            # Counted once (not header.count per column: quadratic on a 40k-column header).
            duplicates = sorted(name for name, n in Counter(header).items() if n > 1)
            if duplicates:
                raise DataError(f"{path}:1: duplicate column(s) {duplicates} in the header")
            start = reader.line_num + 1
            for values in reader:
                if values:  # a blank line
                    if len(values) > len(header):
                        raise DataError(f"{path}:{start}: more values than header columns")
                    if len(values) < len(header):
                        raise DataError(f"{path}:{start}: fewer values than header columns")
                    yield start, dict(zip(header, values, strict=True))
                start = reader.line_num + 1
        except csv.Error as error:
            end = reader.line_num
            through = f" (record read through line {end})" if end > start else ""
            raise DataError(f"{path}:{start}: malformed CSV: {error}{through}") from None


TEXT_TYPES = (str, int, float)
"""Field values a template may show as text (numbers are written as Python does)."""


def _template_fields(template: str) -> list[tuple[str, bool]]:
    """(top-level field name, used as a whole) for each replacement field of a template."""
    used = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            base = name.split(".", 1)[0].split("[", 1)[0]
            used.append((base, base == name))
    return used


def format_input(task: Task, record: dict[str, Any], where: str) -> str:
    """The model input of one record: the task's input template over its fields.

    A field shown whole must be text or a number (a list, an object or null is an
    error), and the input must not be empty."""
    for name, whole in _template_fields(task.input_template):
        if whole and name in record and not _is_text(record[name]):
            raise DataError(f"{where}: field {name!r} is {_kind(record[name])}; expected text")
    try:
        text = task.input_template.format_map(record)
    except KeyError as error:
        raise DataError(
            f"{where}: missing field {error.args[0]!r} (needed by the task's input template)"
        ) from None
    except (IndexError, TypeError, ValueError, AttributeError) as error:
        raise DataError(f"{where}: field does not fit the input template: {error}") from None
    if not text.strip():
        raise DataError(f"{where}: the input is empty")
    return text


def _is_text(value: Any) -> bool:
    return isinstance(value, TEXT_TYPES) and not isinstance(value, bool)


def record_id(record: dict[str, Any], id_field: str | None, where: str) -> str | None:
    """The record's id as text, or ``None`` when it has no id field."""
    if not id_field or id_field not in record:
        return None
    value = record[id_field]
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise DataError(
            f"{where}: id field {id_field!r} is {_kind(value)}; expected text or a whole number"
        )
    if isinstance(value, str) and not value.strip():
        raise DataError(f"{where}: id field {id_field!r} is empty")
    return str(value)


def gold_label(task: Task, record: dict[str, Any], where: str) -> str | None:
    if task.label_field is None:
        return None
    value = record.get(task.label_field)
    if value is None or value == "":
        return None  # an unlabeled row: the common case for a user's own training data
    if not _is_text(value):
        raise DataError(
            f"{where}: label field {task.label_field!r} is {_kind(value)}; expected text or a number"
        )
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
    rows: Iterator[tuple[int, dict[str, Any]]]
    if str(path).startswith("hf:"):
        rows = enumerate(load_hub_split(str(path)), start=1)
    else:
        rows = read_records(path)
    return examples_from_rows(task, split, ((f"{path}:{n}", record) for n, record in rows))


def examples_from_rows(
    task: Task, split: str, rows: Iterable[tuple[str, dict[str, Any]]]
) -> list[Example]:
    """Rows (where each is, for errors; the record) of one split as examples: ids are the
    id field's, else ``<split>-<row index>``."""
    examples: list[Example] = []
    seen: set[str] = set()
    for index, (where, record) in enumerate(rows):
        example_id = record_id(record, task.id_field, where) or f"{split}-{index}"
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
    if task.hf is not None:
        splits = _load_hf_splits(task, data)
    else:
        needs_data = any("{data}" in f for f in task.files.values())
        root = data_dir(data) if needs_data else None
        splits = {
            name: read_split(task, name, expand_path(file, task, root))
            for name, file in task.files.items()
        }
    carve = task.validation
    if carve and "valid" not in splits:
        source = carve.get("from", "train")
        pool = splits[source]
        order = list(range(len(pool)))
        # A fixed permutation: the same validation set on every run and machine.
        random.Random(carve.get("seed", 0)).shuffle(order)
        size = (
            int(carve["size"])
            if "size" in carve
            else round(len(pool) * float(carve.get("fraction", 0.1)))
        )
        held = set(order[:size])
        splits["valid"] = [pool[i] for i in sorted(held)]
        splits[source] = [pool[i] for i in range(len(pool)) if i not in held]
        for example in splits["valid"]:
            example.split = "valid"
    return splits


def _load_hf_splits(task: Task, data: str | Path | None) -> dict[str, list[Example]]:
    """A task's ``hf:`` splits (task split -> dataset split) as examples."""
    spec = task.hf or {}
    path, name = spec["path"], spec.get("name")
    if hf_data.looks_local(path, task.base_dir):
        root = data_dir(data) if "{data}" in path else None
        available = hf_data.open_local(
            expand_path(str(Path(path).expanduser()), task, root), name, path
        )
    else:
        available = hf_data.open_hub(path, name)
    # Every split needs the input template's columns; at least one needs each other field.
    required = list(dict.fromkeys(field for field, _ in _template_fields(task.input_template)))
    optional = [
        field
        for field in (
            task.label_field,
            task.id_field,
            task.choices_field,
            task.human_rationale_field,
        )
        if field and field not in required
    ]
    rows = hf_data.split_rows(available, spec["splits"], required, optional, path)
    return {split: examples_from_rows(task, split, found) for split, found in rows.items()}


def declared_splits(task: Task) -> set[str]:
    """The splits ``load_splits`` gives a task, read from its definition alone."""
    return set(task.splits) | ({"valid"} if task.validation else set())


def require_splits(
    task: Task, splits: dict[str, list[Example]] | set[str], needed: tuple[str, ...]
) -> None:
    """A one-line error (not a KeyError later) when a task lacks a split a stage needs
    (``splits``: the loaded splits, or ``declared_splits(task)`` before loading)."""
    missing = [name for name in needed if name not in splits]
    if missing:
        raise DataError(
            f"{task.source or 'task ' + task.name}: no {' or '.join(missing)} split; this stage "
            f"needs {', '.join(needed)} (name the file under files:, or carve validation with "
            "validation: {from: train, fraction: 0.1})"
        )


def load_hub_split(spec: str) -> list[dict[str, Any]]:
    """``hf:owner/name[@config]:split`` -> rows, for users who can reach the Hugging Face hub."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(
            "hub datasets need the 'datasets' package: pip install 'stepdistill[hub]'"
        ) from None
    _, rest = spec.split(":", 1)
    name, _, split = rest.rpartition(":")
    name, _, config = name.partition("@")
    dataset = datasets.load_dataset(name, config or None, split=split)
    return [dict(row) for row in dataset]
