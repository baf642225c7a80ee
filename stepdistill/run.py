"""The main job: annotate with the teacher, train the student, evaluate, print a table."""

from __future__ import annotations

import json
import time
from typing import Any

from .config import TrainConfig
from .tasks import load_task
from .train import ensure_annotations, train


def teacher_accuracy(config: TrainConfig, split: str = "test") -> float | None:
    """The teacher's accuracy on a split, from its rationale dataset's summary."""
    directory = ensure_annotations(config, load_task(config.task))
    summary = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
    return summary["splits"].get(split, {}).get("teacher_accuracy")


def run(config: TrainConfig | None = None) -> dict[str, Any]:
    """Defaults: SVAMP, the PaLM replay teacher, SmolLM2-135M, Distilling step-by-step."""
    config = config or TrainConfig()
    started = time.time()
    task = load_task(config.task)
    config.annotations = str(ensure_annotations(config, task))
    teacher_test = teacher_accuracy(config)
    metrics = train(config)
    wall = time.time() - started
    print()
    print(f"{'task':<10}{task.name}")
    print(f"{'teacher':<10}{config.teacher:<28}test accuracy {_pct(teacher_test)}")
    print(
        f"{'student':<10}{config.student + ' (' + config.mode + ')':<28}test accuracy {_pct(metrics['test_accuracy'])}"
        f"  ({metrics['test_examples']} examples; valid {_pct(metrics['valid_accuracy'])} at step {metrics['best_step']})"
    )
    print(f"{'run':<10}{metrics['run_dir']}")
    print(f"{'time':<10}{wall / 60:.1f} min")
    return {**metrics, "teacher_test_accuracy": teacher_test, "total_seconds": round(wall, 1)}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
