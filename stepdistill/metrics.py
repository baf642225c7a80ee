"""Metrics: how a predicted label is scored against the gold label."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from .arithmetic import safe_value, same_value
from .tasks import Task, normalize_label


def is_correct(task: Task, predicted: str | None, gold: str | None) -> bool:
    """One prediction against one gold label, by the task's metric."""
    if predicted is None or gold is None:
        return False
    if task.metric == "equation":
        return same_value(predicted, gold)
    if task.metric == "number":
        a, b = number_value(predicted), number_value(gold)
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4)
    return normalize_label(predicted, task.normalize) == normalize_label(gold, task.normalize)


NUMBER = re.compile(
    r"^\s*[$€£]?\s*(?P<number>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+)"
)


def number_value(text: str | None) -> float | None:
    """The value of an answer for the ``number`` metric: an arithmetic expression
    (``( 84.0 / 2.0 )``, a gold equation) by its value, else a leading number with its
    unit or remark ignored (``9 (apples)``, ``$1,200``, ``42 points``); None otherwise."""
    if text is None:
        return None
    value = safe_value(text)
    if value is not None:
        return value
    match = NUMBER.match(text)
    return float(match["number"].replace(",", "")) if match else None


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
