"""Demo bootstrapping: few-shot demonstrations from labelled examples without rationales.

A new task rarely comes with worked examples. Given a few labelled examples, the
teacher is told each gold label and asked to explain why it is right (rationalization,
as in STaR); an explanation is kept only if it parses back, with the task's own parser,
to that same label. The result is a YAML ``demonstrations:`` block to review, edit and
paste into the task file.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml

from .data import load_splits
from .io import atomic_write_text
from .metrics import is_correct
from .parse import OK, example_choices, parse_continuation
from .prompts import build_prompt, render_answer
from .tasks import Task, load_task
from .teachers import Request, Teacher, load_teacher


def rationalization_header(task: Task, label: str) -> str:
    """Tells the teacher the answer and the shape to explain it in."""
    shape = render_answer(task, "<reasoning>", label).strip()
    return f"The correct answer to the next question is {label}. Explain step by step why, ending in this form: {shape}\n\n"


def template_fields(template: str) -> list[str]:
    """Top-level field names a ``str.format`` template uses (``choices[0]`` -> choices)."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name:
            root = name.split("[")[0].split(".")[0]
            if root not in names:
                names.append(root)
    return names


def bootstrap_demos(
    task: str | Task,
    teacher: str | Teacher,
    output: str | Path,
    count: int = 8,
    split: str = "train",
    data: str | Path | None = None,
    teacher_options: dict[str, Any] | None = None,
    attempts: int = 3,
) -> dict[str, Any]:
    """Write up to ``count`` demonstrations (YAML) and return a summary.

    Examples are taken in order from ``split`` (labelled ones only), at most
    ``count * attempts`` of them, until ``count`` explanations parse back to the gold label.
    """
    task = task if isinstance(task, Task) else load_task(task)
    backend = (
        teacher
        if not isinstance(teacher, str)
        else load_teacher(teacher, task, data=data, **(teacher_options or {}))
    )
    examples = [
        example for example in load_splits(task, data).get(split, []) if example.label is not None
    ]
    candidates = examples[: count * attempts]
    requests = [
        Request(
            example,
            build_prompt(
                task,
                example.input,
                example.record,
                header=rationalization_header(task, example.label or ""),
            ),
        )
        for example in candidates
    ]
    fields = [name for name in template_fields(task.question_template) if name != "input"]
    demonstrations: list[dict[str, Any]] = []
    rejected: dict[str, int] = {}
    answers = backend.complete(requests)
    try:
        for completion in answers:
            example = completion.request.example
            parsed = parse_continuation(
                completion.text, task, example_choices(task, example.record)
            )
            if completion.error is not None:
                reason = "error"
            elif parsed.status != OK:
                reason = parsed.status
            elif not is_correct(task, parsed.label, example.label):
                reason = "label differs from gold"
            else:
                demo = {
                    "input": example.input,
                    **{name: example.record[name] for name in fields if name in example.record},
                }
                demonstrations.append(
                    {
                        **demo,
                        "rationale": parsed.rationale or "",
                        "label": example.label,
                        "source_id": example.id,
                    }
                )
                if len(demonstrations) >= count:
                    break
                continue
            rejected[reason] = rejected.get(reason, 0) + 1
    finally:
        close = getattr(answers, "close", None)
        if close is not None:
            close()
    # Keep the split's order (the backend may answer in any order).
    order = {example.id: index for index, example in enumerate(candidates)}
    demonstrations.sort(key=lambda demo: order[demo["source_id"]])
    header = (
        f"# Demonstrations for task {task.name}, bootstrapped by teacher {getattr(backend, 'name', 'teacher')}:\n"
        "# each explanation was checked to parse back to its gold label. Review them, then\n"
        "# paste this block into the task YAML (source_id says where each came from).\n"
    )
    text = header + yaml.safe_dump(
        {"demonstrations": demonstrations}, sort_keys=False, allow_unicode=True, width=100
    )
    atomic_write_text(output, text)
    return {
        "task": task.name,
        "asked": len(requests),
        "kept": len(demonstrations),
        "rejected": rejected,
        "output": str(output),
    }
