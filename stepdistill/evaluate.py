"""Evaluate stage: recompute a finished run's metrics from its saved model (or re-score
its saved predictions). Generation and scoring are ``inference.py``'s, in the precision
a reloaded ``Student`` uses, so the figures match the run's own test.

A ``rationale-input`` run reads the teacher's rationale with every input: its rationale
dataset must exist (``evaluate`` never calls a teacher).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import load_splits
from .inference import student_labels
from .io import read_jsonl, write_json, write_jsonl
from .metrics import accuracy_rows, is_correct, labelled_accuracy
from .run_folder import load_run
from .student import Student
from .training_data import evaluation_inputs


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    limit: int | None = None,
    rescore: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Recompute a run's metrics: regenerate predictions from its saved model and write
    ``eval/<split>-metrics.json`` (rows in ``eval/<split>.jsonl``), or, with ``rescore``,
    re-score its saved predictions into ``eval/<split>-rescored-metrics.json``: each kind
    of result has its own file.

    By default the examples are those the run itself scored: the first ``eval_limit``
    (for validation also ``valid_limit``) of the split, as training took them; ``limit``
    chooses another number. The result says what was scored (``scored``). ``device``: where the model runs (default:
    the run's ``device`` setting)."""
    run = load_run(run_dir)
    task, config = run.task, run.config
    mode = config.mode_spec
    run_limit = min(
        filter(None, (config.eval_limit, config.valid_limit if split == "valid" else None)),
        default=None,
    )
    limit = limit or run_limit
    if rescore:
        rows = read_jsonl(Path(run_dir) / "predictions" / f"{split}.jsonl")
        rows = rows[:limit] if limit else rows
        for row in rows:
            row["correct"] = is_correct(task, row["prediction"], row["gold"])
        accuracy = labelled_accuracy(rows)
        scored = f"{len(rows)} saved {split} predictions of the run, re-scored"
    else:
        examples = load_splits(task, config.data_dir)[split]
        whole = len(examples)
        examples = examples[:limit] if limit else examples
        scored = (
            f"all {whole} {split} examples"
            if len(examples) == whole
            else f"the first {len(examples)} of {whole} {split} examples"
            + (" (the run's limit)" if limit == run_limit else " (--limit)")
        )
        if mode.rationale_in_input:
            examples = evaluation_inputs(config, task, examples, split)
        # Loaded as a Student is: on the device, in the run's precision (one policy).
        student = Student.load(run_dir, device=device)
        predictions = student_labels(
            student.model,
            student.tokenizer,
            task,
            config,
            examples,
            student.bf16,
            desc=f"evaluate {split}",
        )
        accuracy, rows = accuracy_rows(task, examples, predictions)
        write_jsonl(Path(run_dir) / "eval" / f"{split}.jsonl", rows)
    result = {
        "run": str(run_dir),
        "split": split,
        "examples": len(rows),
        "accuracy": accuracy,
        "rescored": rescore,
        "scored": scored,
    }
    kind = "rescored-metrics" if rescore else "metrics"
    write_json(Path(run_dir) / "eval" / f"{split}-{kind}.json", result)
    result["file"] = str(Path(run_dir) / "eval" / f"{split}-{kind}.json")
    return result
