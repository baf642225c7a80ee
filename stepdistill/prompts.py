"""Few-shot chain-of-thought prompts, built from a task's demonstrations (pure functions).

The shape is the paper's Figure 3: demonstrations (input, rationale, label), then the
new input; the teacher continues with a rationale and a label. How a question and an
answer are written is data in the task (``question_template``, ``answer_template``),
chosen so that a continuation in the same shape parses with the task's parser.
"""

from __future__ import annotations

from typing import Any

from .tasks import Task, TaskError


def render_fields(task: Task, template: str, fields: dict[str, Any]) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as error:
        raise TaskError(
            f"task {task.name}: template {template!r} names {error}, which the example does not have"
        ) from None


def render_question(task: Task, input_text: str, record: dict[str, Any] | None = None) -> str:
    """The task's ``question_template`` over a record's fields and ``input``."""
    return render_fields(task, task.question_template, {**(record or {}), "input": input_text})


def render_answer(task: Task, rationale: str, label: str) -> str:
    """A demonstration's answer: ``answer_template`` with its rationale and label."""
    return task.answer_template.format(rationale=rationale.strip(), label=label)


def render_demonstration(task: Task, demonstration: dict[str, Any]) -> str:
    """One worked example: question, then rationale and label."""
    if not {"rationale", "label"} <= set(demonstration):
        raise TaskError(
            f"task {task.name}: a demonstration needs 'rationale' and 'label' (has {sorted(demonstration)})"
        )
    input_text = demonstration.get("input")
    if input_text is None:  # a demonstration given as record fields (premise, hypothesis)
        input_text = render_fields(task, task.input_template, demonstration)
    question = render_question(task, input_text, demonstration)
    return question + render_answer(
        task, str(demonstration["rationale"]), str(demonstration["label"])
    )


def build_prompt(
    task: Task, input_text: str, record: dict[str, Any] | None = None, header: str = ""
) -> str:
    """Demonstrations, then ``header`` (if any) and the question for this input."""
    parts = [render_demonstration(task, demo) for demo in task.demonstrations]
    parts.append(header + render_question(task, input_text, record))
    return task.demonstration_separator.join(parts)
