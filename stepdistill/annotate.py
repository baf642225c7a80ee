"""Teacher stage: ask a teacher for a rationale and a label for every example.

Writes the rationale dataset (one JSONL per split: id, input, gold label, teacher
label, rationale, parse status, raw text) and a summary with counts, parse failures
and the teacher's accuracy against gold.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .data import Example, load_splits
from .io import read_jsonl, write_json, write_jsonl
from .metrics import is_correct
from .parse import OK, example_choices, parse_continuation
from .prompts import build_prompt
from .tasks import Task, load_task
from .teachers import Request, load_teacher


def annotate(
    task: str | Task,
    teacher: str = "palm-replay",
    output: str | Path | None = None,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    data: str | Path | None = None,
    limit: int | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Annotate a task's splits with a teacher; returns the summary (also written to disk)."""
    task = task if isinstance(task, Task) else load_task(task)
    output = Path(output) if output else Path("annotations") / f"{task.name}-{teacher}"
    examples = load_splits(task, data)
    backend = load_teacher(teacher, task, **({"data": data} if teacher.endswith("replay") else {}))
    summary: dict[str, Any] = {"task": task.name, "teacher": teacher, "splits": {}}
    for split in splits:
        if split not in examples:
            continue
        chosen = examples[split][:limit] if limit else examples[split]
        rows = annotate_examples(task, backend, chosen, desc=f"annotate {task.name}/{split}", quiet=quiet)
        write_jsonl(output / f"{split}.jsonl", rows)
        summary["splits"][split] = summarize(rows)
    write_json(output / "summary.json", summary)
    summary["output"] = str(output)
    return summary


def annotate_examples(task: Task, backend: Any, examples: list[Example], desc: str = "annotate", quiet: bool = False) -> list[dict[str, Any]]:
    requests = [Request(example, build_prompt(task, example.input)) for example in examples]
    by_id: dict[str, dict[str, Any]] = {}
    for completion in tqdm(backend.complete(requests), total=len(requests), desc=desc, disable=quiet):
        example = completion.request.example
        parsed = parse_continuation(completion.text, task, example_choices(task, example.record))
        by_id[example.id] = {
            "id": example.id,
            "split": example.split,
            "input": example.input,
            "gold_label": example.label,
            "teacher_label": parsed.label,
            "rationale": parsed.rationale,
            "parse_status": parsed.status if completion.error is None else "error",
            "teacher_correct": None if example.label is None else is_correct(task, parsed.label, example.label),
            "raw": completion.text,
            **({"error": completion.error} if completion.error else {}),
        }
    # Keep the split's order whatever order the backend answered in.
    return [by_id[example.id] for example in examples if example.id in by_id]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of parse outcomes and the teacher's accuracy against gold labels."""
    statuses = Counter(row["parse_status"] for row in rows)
    labelled = [row for row in rows if row.get("gold_label") is not None]
    summary: dict[str, Any] = {
        "examples": len(rows),
        "parsed": statuses.get(OK, 0),
        "parse_status": dict(statuses),
        "with_gold": len(labelled),
    }
    if labelled:
        correct = sum(bool(row["teacher_correct"]) for row in labelled)
        summary["teacher_correct"] = correct
        # Unparseable outputs count as wrong: they are what the teacher gave.
        summary["teacher_accuracy"] = correct / len(labelled)
    return summary


def load_annotations(directory: str | Path, split: str) -> dict[str, dict[str, Any]]:
    """id -> annotation row of one split of a rationale dataset."""
    path = Path(directory) / f"{split}.jsonl"
    return {row["id"]: row for row in read_jsonl(path)}
