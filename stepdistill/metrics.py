"""Metrics: how a predicted label is scored against the gold label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .arithmetic import same_value
from .tasks import Task, normalize_label


def is_correct(task: Task, predicted: str | None, gold: str | None) -> bool:
    """One prediction against one gold label, by the task's metric."""
    if predicted is None or gold is None:
        return False
    if task.metric == "equation":
        return same_value(predicted, gold)
    return normalize_label(predicted, task.normalize) == normalize_label(gold, task.normalize)


def accuracy(task: Task, predicted: Sequence[str | None], gold: Sequence[str | None]) -> float:
    """Fraction correct over the examples that have a gold label."""
    pairs = [(p, g) for p, g in zip(predicted, gold, strict=True) if g is not None]
    if not pairs:
        return float("nan")
    return sum(is_correct(task, p, g) for p, g in pairs) / len(pairs)


def accuracy_rows(
    task: Task, examples: Sequence[Any], predictions: Sequence[dict[str, Any]]
) -> tuple[float, list[dict[str, Any]]]:
    """Accuracy and per-example rows (id, input, gold, prediction, raw, correct) of
    predictions for examples (each with ``id``, ``input``, ``label``)."""
    rows = []
    for example, prediction in zip(examples, predictions, strict=True):
        rows.append(
            {
                "id": example.id,
                "input": example.input,
                "gold": example.label,
                "prediction": prediction["prediction"],
                "raw": prediction["raw"],
                **({"rationale": prediction["rationale"]} if "rationale" in prediction else {}),
                "correct": is_correct(task, prediction["prediction"], example.label),
            }
        )
    return labelled_accuracy(rows), rows


def labelled_accuracy(rows: Sequence[dict[str, Any]]) -> float:
    """Fraction of ``correct`` rows among those with a gold label (NaN when none has)."""
    labelled = [row for row in rows if row["gold"] is not None]
    return sum(row["correct"] for row in labelled) / len(labelled) if labelled else float("nan")
