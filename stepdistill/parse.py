"""Parse a teacher's raw continuation into (rationale, label): pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import regex

from .tasks import Task, normalize_label

OK = "ok"
UNPARSEABLE = "unparseable"
INVALID_LABEL = "invalid_label"
EMPTY = "empty"
TIMEOUT = "pattern_timeout"

PATTERN_TIMEOUT_S = 1.0
"""Time limit of one pattern search. The built-in patterns run in linear time (a test
times them on hostile text); a user's pattern may backtrack exponentially ("(a+)+"),
so every search runs under the ``regex`` package's timeout and a continuation that
hits it is reported as ``pattern_timeout``, never left to run for minutes."""


@lru_cache(maxsize=64)
def compile_pattern(pattern: str) -> regex.Pattern[str]:
    # VERSION0: the semantics of the standard library's ``re``, which task files assume.
    return regex.compile(pattern, flags=regex.VERSION0)


@dataclass(frozen=True)
class Parsed:
    """The outcome of parsing one continuation. ``label`` is ``None`` unless status is ok."""

    status: str
    rationale: str | None
    label: str | None
    raw_label: str | None = None


def cut(text: str, markers: list[str]) -> str:
    """Text before the first marker: drops an invented next few-shot example."""
    end = len(text)
    for marker in markers:
        position = text.find(marker)
        if position != -1:
            end = min(end, position)
    return text[:end]


def parse_continuation(raw: str | None, task: Task, choices: list[str] | None = None) -> Parsed:
    """Parse one raw continuation. Never invents a label: anything that does not
    match the task's pattern, or names a label outside a closed label set, is
    reported with its status and ``label=None``."""
    if raw is None or not raw.strip():
        return Parsed(EMPTY, None, None)
    text = cut(raw, task.parser.cut_at).strip()
    try:
        match = compile_pattern(task.parser.pattern).search(text, timeout=PATTERN_TIMEOUT_S)
    except TimeoutError:
        return Parsed(TIMEOUT, None, None)
    if match is None:
        return Parsed(UNPARSEABLE, None, None)
    groups = match.groupdict()
    rationale = (groups.get("rationale") or "").strip() or None
    raw_label = (groups.get("label") or "").strip()
    label = normalize_label(raw_label, task.normalize)
    letter = groups.get("letter")
    if choices is not None:
        normalized_choices = [normalize_label(str(c), task.normalize) for c in choices]
        if not label and letter:
            # "So the answer is (c)." with no text: the letter names the choice.
            # A text that matches no choice ("(a) bus or (b) train", a letter that
            # disagrees with its text) stays invalid: we never pick for the teacher.
            index = "abcde".find(letter.lower())
            if 0 <= index < len(normalized_choices):
                label = normalized_choices[index]
        if label not in normalized_choices:
            return Parsed(INVALID_LABEL, rationale, None, raw_label)
    elif not label and letter and task.letter_labels:
        # "Answer: (b)" on a fixed label set: the task's letter map names the label. An
        # unmapped letter stays invalid, never guessed.
        label = task.letter_labels.get(letter.lower(), "")
        if not label:
            return Parsed(INVALID_LABEL, rationale, None, letter)
    if not label:
        return Parsed(UNPARSEABLE, rationale, None, raw_label)
    if task.labels is not None and label not in task.labels:
        return Parsed(INVALID_LABEL, rationale, None, raw_label)
    return Parsed(OK, rationale, label, raw_label)


def example_choices(task: Task, record: dict[str, Any]) -> list[str] | None:
    if task.choices_field is None:
        return None
    value = record.get(task.choices_field)
    return [str(v) for v in value] if isinstance(value, list) else None
