"""A task's rows from a dataset read with the ``datasets`` package (a task's ``hf:``).

``hf: {path: ..., name: ..., splits: {train: train, test: validation}}``, where ``path``
is a hub id (``owner/name``, read with ``datasets.load_dataset``), a folder written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a folder or file of Parquet or
Arrow files. A local path is relative to the task file and, like ``files:``, must stay
inside the task's folder (or ``$STEPDISTILL_ALLOWED_DIRS``). ``datasets`` is imported
only here, only when a task names ``hf:``.

Rows become the same records (and the same ids, ``<split>-<row index>`` without an id
field) as the same rows written to a JSONL file. Every error is one line naming the
dataset and what is wrong.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .data import DataError, Example, _template_fields, data_dir, examples_from_rows, expand_path
from .tasks import Task

LOCAL_SUFFIXES = (".parquet", ".arrow")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_TRUE = ("1", "on", "yes", "true")


def offline() -> bool:
    """True when ``$HF_HUB_OFFLINE`` (or ``$HF_DATASETS_OFFLINE``) is set."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def _import_datasets() -> Any:
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(
            "a task with hf: needs the 'datasets' package: pip install 'stepdistill[hub]'"
        ) from None
    return datasets


def _looks_local(path: str, task: Task) -> bool:
    """A local folder or file (else a hub id): it exists, or cannot be a hub id."""
    if "{data}" in path or path.startswith((".", "/", "~")) or "\\" in path:
        return True
    if path.lower().endswith(LOCAL_SUFFIXES) or not _HUB_ID.fullmatch(path):
        return True
    return (task.base_dir / path).exists()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _offline_note() -> str:
    return (
        "; HF_HUB_OFFLINE is set, so the hub is not asked (only datasets already in the "
        "local cache can be read)"
        if offline()
        else ""
    )


def open_dataset(task: Task, data: str | Path | None = None) -> dict[str, Any]:
    """The dataset's splits: split name -> ``datasets.Dataset``."""
    spec = task.hf or {}
    path, name = spec["path"], spec.get("name")
    label = f"hf dataset {path!r}"
    if not _looks_local(path, task):
        return _open_hub(path, name, label)
    root = data_dir(data) if "{data}" in path else None
    local = expand_path(str(Path(path).expanduser()), task, root)
    if not local.exists():
        raise DataError(f"{label}: not found (no folder or file {str(local)!r}){_offline_note()}")
    datasets = _import_datasets()
    try:
        if local.is_dir() and (
            (local / "dataset_dict.json").is_file() or (local / "state.json").is_file()
        ):
            if name:
                raise DataError(
                    f"{label}: a folder written by save_to_disk has no configurations; "
                    f"drop name: {name!r}"
                )
            loaded = datasets.load_from_disk(str(local))
        elif local.is_file():
            kind = "arrow" if local.suffix.lower() == ".arrow" else "parquet"
            loaded = datasets.load_dataset(kind, data_files={"train": str(local)})
        else:
            loaded = datasets.load_dataset(str(local), name)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - any reading failure becomes one line
        raise DataError(f"{label}: cannot be read ({_first_line(error)})") from None
    if isinstance(loaded, datasets.Dataset):
        return {str(loaded.split) if loaded.split else "train": loaded}
    return dict(loaded)


def _open_hub(path: str, name: str | None, label: str) -> dict[str, Any]:
    datasets = _import_datasets()
    try:
        loaded = datasets.load_dataset(path, name)
    except Exception as error:  # noqa: BLE001 - not found, offline, no network: one line
        raise DataError(
            f"{label}: not found (no such local folder or file, and the hub could not provide "
            f"it: {_first_line(error)}){_offline_note()}"
        ) from None
    return dict(loaded)


def _needed_columns(task: Task) -> tuple[list[str], list[str]]:
    """(columns every split must have: the input template's; columns at least one split
    must have: label, id, choices and human rationale fields)."""
    required = list(dict.fromkeys(name for name, _ in _template_fields(task.input_template)))
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
    return required, optional


def load_hf_splits(task: Task, data: str | Path | None = None) -> dict[str, list[Example]]:
    """The task's splits (``hf.splits``: task split -> dataset split) as examples."""
    spec = task.hf or {}
    label = f"hf dataset {spec.get('path')!r}"
    available = open_dataset(task, data)
    chosen: dict[str, tuple[str, Any]] = {}
    for split, source in spec["splits"].items():
        if source not in available:
            raise DataError(
                f"{label}: no split {source!r} (hf.splits.{split}); it has {sorted(available)}"
            )
        chosen[split] = (source, available[source])
    required, optional = _needed_columns(task)
    for source, dataset in chosen.values():
        columns = list(dataset.column_names)
        for column in required:
            if column not in columns:
                raise DataError(
                    f"{label} split {source!r}: no column {column!r} (needed by the task's "
                    f"input template); its columns: {columns}"
                )
    for column in optional:
        if not any(column in dataset.column_names for _, dataset in chosen.values()):
            source, dataset = next(iter(chosen.values()))
            raise DataError(
                f"{label}: no column {column!r} (named by the task) in any of its splits "
                f"{sorted({s for s, _ in chosen.values()})}; split {source!r} has "
                f"{list(dataset.column_names)}"
            )
    return {
        split: examples_from_rows(
            task,
            split,
            ((f"{label} split {source!r} row {i}", dict(row)) for i, row in enumerate(dataset)),
        )
        for split, (source, dataset) in chosen.items()
    }
