"""Metrics: how a predicted label is scored against the gold label."""

from __future__ import annotations

from collections.abc import Sequence

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
