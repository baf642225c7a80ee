"""A results file: one JSON row per finished run, appended by ``sweep`` and read by
``report`` (which needs nothing else: not the run folders)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results file. A torn last line (a crash mid-write) is ignored; any
    other line that is not a JSON object is skipped with a warning naming it."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif number != len(lines):  # a terminated line: not a crash mid-append
            warnings.warn(f"{path}:{number}: not a results row; skipped", stacklevel=2)
    return rows


def recorded_runs(path: str | Path) -> set[Any]:
    """The run ids a results file holds (reread each time: another sweep may add some)."""
    return {row.get("run_id") for row in read_results(path)}


def first_of_each_run(rows: list[dict[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    """Each run's first row; a run recorded twice (two sweeps trained it at once, before
    the sweep checked for that) is named in a warning and counted once."""
    seen: set[Any] = set()
    kept = []
    for row in rows:
        if row.get("run_id") is not None and row["run_id"] in seen:
            warnings.warn(
                f"{path}: run {row['run_id']} recorded twice; the first row counts", stacklevel=2
            )
            continue
        seen.add(row.get("run_id"))
        kept.append(row)
    return kept
