"""A task's rows from a dataset read with the ``datasets`` package (a task's ``hf:``).

``hf: {path: ..., name: ..., splits: {train: train, test: validation}}``, where ``path``
is a hub id (``owner/name``, read with ``datasets.load_dataset``), a folder written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a folder or file of Parquet or
Arrow files. A local path is relative to the task file and, like ``files:``, must stay
inside the task's folder (or ``$STEPDISTILL_ALLOWED_DIRS``; ``stepdistill.data`` resolves
it and turns the rows into examples). ``datasets`` is imported
only here, only when a task names ``hf:``.

Rows become the same records (and the same ids, ``<split>-<row index>`` without an id
field) as the same rows written to a JSONL file. Every error is one line naming the
dataset and what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DataError

LOCAL_SUFFIXES = (".parquet", ".arrow")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_TRUE = ("1", "on", "yes", "true")
Rows = Iterator[tuple[str, dict[str, Any]]]
"""(where the row is, for errors; the record) per row of one split."""


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


def looks_local(path: str, base_dir: Path) -> bool:
    """A local folder or file (else a hub id): it exists, or cannot be a hub id."""
    if "{data}" in path or path.startswith((".", "/", "~")) or "\\" in path:
        return True
    if path.lower().endswith(LOCAL_SUFFIXES) or not _HUB_ID.fullmatch(path):
        return True
    return (base_dir / path).exists()


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


def open_local(local: Path, name: str | None, path: str) -> dict[str, Any]:
    """The splits (split name -> ``datasets.Dataset``) of a local dataset: a
    ``save_to_disk`` folder, a Parquet/Arrow file, or a folder of them. ``path`` is the
    task's own spelling, for errors."""
    label = f"hf dataset {path!r}"
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


def open_hub(path: str, name: str | None) -> dict[str, Any]:
    """The splits of a hub dataset, read with ``datasets.load_dataset``."""
    datasets = _import_datasets()
    try:
        loaded = datasets.load_dataset(path, name)
    except Exception as error:  # noqa: BLE001 - not found, offline, no network: one line
        raise DataError(
            f"hf dataset {path!r}: not found (no such local folder or file, and the hub could "
            f"not provide it: {_first_line(error)}){_offline_note()}"
        ) from None
    return dict(loaded)


def split_rows(
    available: dict[str, Any],
    splits: dict[str, str],
    required: list[str],
    optional: list[str],
    path: str,
) -> dict[str, Rows]:
    """The rows of each task split (``splits``: task split -> dataset split), once every
    chosen split has the ``required`` columns and some chosen split has each ``optional``
    one."""
    label = f"hf dataset {path!r}"
    chosen: dict[str, tuple[str, Any]] = {}
    for split, source in splits.items():
        if source not in available:
            raise DataError(
                f"{label}: no split {source!r} (hf.splits.{split}); it has {sorted(available)}"
            )
        chosen[split] = (source, available[source])
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
        split: ((f"{label} split {source!r} row {i}", dict(row)) for i, row in enumerate(dataset))
        for split, (source, dataset) in chosen.items()
    }
