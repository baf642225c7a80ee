"""Small file helpers: atomic writes, JSON lines, run folders that never overwrite.

Two ways to write that a ``kill -9`` cannot leave half done: whole files go to a
temporary file beside the target and are renamed over it (``atomic_write_text``);
files that grow one JSON line at a time (predictions, sweep results) are appended
to, and a last line torn by a crash is cut off before the next append
(``cut_torn_tail``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .data import read_records


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def cut_torn_tail(path: str | Path) -> int:
    """Cut off a last line left torn by a crash (no final newline, or not valid JSON),
    so the next append starts on a line of its own; returns the bytes removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    keep = len(data) if data.endswith(b"\n") or not data else data.rfind(b"\n") + 1
    if keep:
        last = data[data.rfind(b"\n", 0, keep - 1) + 1 : keep]
        try:
            json.loads(last)
        except ValueError:  # a complete line written half (e.g. a full disk): drop it
            keep -= len(last)
    if keep != len(data):
        with path.open("r+b") as handle:
            handle.truncate(keep)
    return len(data) - keep


def append_jsonl(path: str | Path, row: dict[str, Any]) -> None:
    """Append one JSON line and force it to disk (after cutting a torn last line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cut_torn_tail(path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [row for _, row in read_records(path)]


def new_run_dir(parent: str | Path, name: str) -> Path:
    """A fresh folder ``parent/name`` (or ``name-2``, ``name-3`` ...): never reuses one."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        candidate = parent / (name if attempt == 1 else f"{name}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run folder under {parent}")
