"""The main job, and the one place that chains the stages: annotate with the teacher
(when its rationale dataset does not exist yet), train the student, print a table.
The task is loaded once and handed down."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .annotate import annotate
from .annotations import default_folder, has_annotations
from .config import TrainConfig
from .data import declared_splits, require_splits
from .tasks import Task, load_task
from .teachers import teacher_label
from .train import train

TRAINING_SPLITS = ("train", "valid", "test")
ANNOTATE_OPTIONS = ("max_cost", "max_tokens", "prices", "store")
"""Options of ``annotate`` itself (budget, store), not of the teacher backend."""
STOPPED = "STOPPED"
"""Written into a rationale folder whose annotation a budget stopped: not complete."""


def ensure_annotations(
    config: TrainConfig, task: Task, teacher_options: dict[str, Any] | None = None
) -> Path:
    """The folder of the teacher's rationale dataset; made with ``config.teacher`` when no
    folder was given and the default one does not exist yet (after checking that the
    task has the splits training needs: nothing is asked of a teacher in vain).

    ``teacher_options``: the teacher's options (``model``, ``base_url``, ``concurrency``
    ...) and annotate's budget and store settings (``max_cost``, ``max_tokens``,
    ``prices``, ``store``). A run whose teacher stopped at its budget goes no further:
    rerunning the command asks what is missing (the answers are stored), then trains."""
    require_splits(task, declared_splits(task), TRAINING_SPLITS)
    directory = (
        Path(config.annotations) if config.annotations else default_folder(task, config.teacher)
    )
    if not has_annotations(directory) or (directory / STOPPED).is_file():
        if config.annotations:
            raise FileNotFoundError(
                f"{directory}/train.jsonl not found: run `stepdistill annotate` first"
            )
        options = dict(teacher_options or {})
        budget = {k: options.pop(k) for k in ANNOTATE_OPTIONS if k in options}
        summary = annotate(
            task, config.teacher, directory, data=config.data_dir, teacher_options=options, **budget
        )
        if "stopped" in summary:
            # Partial annotations are not a training set: say so, and let a rerun finish.
            (directory / STOPPED).write_text(summary["stopped"] + "\n", encoding="utf-8")
            raise ValueError(
                f"the teacher stopped before every example was annotated ({summary['stopped']}); "
                "what it answered is stored: rerun the same command (with a larger budget) "
                "to continue"
            )
        (directory / STOPPED).unlink(missing_ok=True)
    return directory


def teacher_accuracy(annotations: Path, split: str = "test") -> float | None:
    """The teacher's accuracy on a split, from its rationale dataset's summary (None for a
    dataset without one, e.g. written by hand or exported)."""
    path = annotations / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    return summary["splits"].get(split, {}).get("teacher_accuracy")


def run(
    config: TrainConfig | None = None, teacher_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Defaults: SVAMP, the PaLM replay teacher, SmolLM2-135M, Distilling step-by-step.
    ``teacher_options``: as ``ensure_annotations`` takes them (a live teacher's model,
    base URL, concurrency, budget)."""
    config = config or TrainConfig()
    started = time.time()
    task = load_task(config.task)
    annotations = ensure_annotations(config, task, teacher_options)
    config.annotations = str(annotations)
    teacher_test = teacher_accuracy(annotations)
    metrics = train(config, task=task)
    wall = time.time() - started
    print()
    print(f"{'task':<10}{task.name}")
    teacher = teacher_label(config.teacher, task)
    print(f"{'teacher':<10}{teacher:<28}test accuracy {_pct(teacher_test)}")
    print(
        f"{'student':<10}{config.student + ' (' + config.mode + ')':<28}test accuracy {_pct(metrics['test_accuracy'])}"
        f"  ({metrics['test_examples']} examples; valid {_pct(metrics['valid_accuracy'])} at step {metrics['best_step']})"
    )
    print(f"{'run':<10}{metrics['run_dir']}")
    print(f"{'time':<10}{wall / 60:.1f} min")
    return {**metrics, "teacher_test_accuracy": teacher_test, "total_seconds": round(wall, 1)}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
