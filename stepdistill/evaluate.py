"""Evaluate stage: recompute a finished run's metrics from its saved model (or re-score
its saved predictions). Generation and scoring are ``inference.py``'s, in the precision
a reloaded ``Student`` uses, so the figures match the run's own test.

A ``rationale-input`` run reads the teacher's rationale with every input: its rationale
dataset must exist (``evaluate`` never calls a teacher).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .annotations import default_folder, has_annotations, load_annotations
from .data import load_splits
from .device import resolve_device, use_bf16
from .inference import for_inference, predict
from .io import read_jsonl, write_json, write_jsonl
from .metrics import accuracy_rows, is_correct, labelled_accuracy
from .models import load_student
from .modes import get_mode
from .run_folder import load_run
from .training_data import evaluation_inputs


def evaluate(
    run_dir: str | Path,
    split: str = "test",
    limit: int | None = None,
    rescore: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Recompute a run's metrics: regenerate predictions from its saved model (or, with
    ``rescore``, re-score its saved predictions) and write ``eval/<split>-metrics.json``.
    ``device``: where the model runs (default: the run's ``device`` setting)."""
    run = load_run(run_dir)
    task, config = run.task, run.config
    mode = get_mode(config.mode)
    if rescore:
        rows = read_jsonl(Path(run_dir) / "predictions" / f"{split}.jsonl")
        for row in rows:
            row["correct"] = is_correct(task, row["prediction"], row["gold"])
        accuracy = labelled_accuracy(rows)
    else:
        examples = load_splits(task, config.data_dir)[split]
        examples = examples[:limit] if limit else examples
        if mode.rationale_in_input:
            examples = evaluation_inputs(
                config, task, examples, teacher_rationales(config, task, split)
            )
        model, tokenizer = load_student(str(Path(run_dir) / "model"))
        place = resolve_device(device or config.device)
        model.to(place)
        bf16 = use_bf16(config.bf16, place)
        for_inference(model, bf16)
        predictions = predict(
            model,
            tokenizer,
            task,
            [e.input for e in examples],
            mode,
            max_input_tokens=config.max_input_tokens,
            max_rationale_tokens=config.max_rationale_tokens,
            batch_size=config.eval_batch_size,
            bf16=bf16,
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
    }
    write_json(Path(run_dir) / "eval" / f"{split}-metrics.json", result)
    return result


def teacher_rationales(config: Any, task: Any, split: str) -> dict[str, dict[str, Any]]:
    """The stored teacher rationales of a split, for a rationale-input run (none needed
    for human rationales); an error when they were never made."""
    if config.rationale_source == "human":
        return {}
    folder = (
        Path(config.annotations) if config.annotations else default_folder(task, config.teacher)
    )
    if not has_annotations(folder):
        raise FileNotFoundError(
            f"this {config.mode} run reads the teacher's rationale with each input, and none "
            f"are stored at {folder}: run `stepdistill annotate --task {task.name} --teacher "
            f"{config.teacher} --output {folder}` first"
        )
    return load_annotations(folder, split)
