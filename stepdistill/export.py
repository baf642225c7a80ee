"""Export stage: a rationale dataset as one JSONL file a user can read, filter or feed to
another tool: one row per example (and sample) with its split, input, gold label, the
teacher's label and rationale, the parse status and the teacher's raw answer.

    stepdistill export annotations/tickets-openai --output tickets-rationales.jsonl
    stepdistill export annotations/tickets-openai --output ok.jsonl --parsed-only --splits train
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .annotations import has_annotations
from .io import read_jsonl, write_jsonl
from .parse import OK

FIELDS = (
    "id",
    "split",
    "sample",
    "input",
    "gold_label",
    "teacher_label",
    "rationale",
    "teacher_correct",
    "parse_status",
    "raw",
    "error",
)


def export_annotations(
    annotations: str | Path,
    output: str | Path,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    parsed_only: bool = False,
) -> dict[str, Any]:
    """Write the rows of a rationale dataset's splits (those present) to one JSONL file;
    ``parsed_only`` keeps the rows whose answer parsed. Returns rows written per split."""
    folder = Path(annotations)
    if not has_annotations(folder):
        raise FileNotFoundError(
            f"{folder} is not a rationale dataset (no train.jsonl): give the folder "
            "`stepdistill annotate` wrote"
        )
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for split in splits:
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            continue
        kept = [
            {key: row[key] for key in FIELDS if key in row}
            for row in read_jsonl(path)
            if not parsed_only or row.get("parse_status") == OK
        ]
        for row in kept:
            row.setdefault("split", split)
        counts[split] = len(kept)
        rows.extend(kept)
    write_jsonl(Path(output), rows)
    return {"output": str(output), "rows": counts}
