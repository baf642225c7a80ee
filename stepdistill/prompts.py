"""Few-shot chain-of-thought prompts, built from a task's demonstrations (pure functions)."""

from __future__ import annotations

from .tasks import Task


def build_prompt(task: Task, input_text: str) -> str:
    """The paper's Figure 3 shape: demonstrations (input, rationale, label), then the input.

    Each demonstration is written ``Q: <input>\\nA: <rationale> So the answer is <label>.``;
    the teacher continues after ``A:`` for the new input.
    """
    shots = [
        f"Q: {demo['input']}\nA: {demo['rationale']} So the answer is {demo['label']}.\n\n"
        for demo in task.demonstrations
    ]
    return "".join(shots) + f"Q: {input_text}\nA:"
