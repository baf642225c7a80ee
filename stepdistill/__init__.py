"""stepdistill: Distilling step-by-step as a library.

The public API, importable from the package itself (none of it imports torch,
transformers or FastAPI until a model is loaded or trained)::

    from stepdistill import Student, TrainConfig, annotate, load_task, run, train

    annotate("my_task.yaml", "openai", teacher_options={"model": "gpt-4o-mini"})
    metrics = train(TrainConfig(task="my_task.yaml", student="HuggingFaceTB/SmolLM2-135M-Instruct"))
    student = Student.load(metrics["run_dir"])

The package sits above the stages, like the command line: it re-exports them and no
module of the package imports it.
"""

from __future__ import annotations

# Imported eagerly, not on first attribute access: ``stepdistill.train`` is both a module
# and a function, and importing the module later would otherwise make
# ``from stepdistill import train`` return the module.
from .annotate import annotate
from .config import ConfigError, TrainConfig, load_config
from .data import DataError
from .evaluate import evaluate
from .export import export_annotations
from .models import StudentError
from .predict import predict
from .run import run
from .student import Prediction, Student
from .tasks import Task, TaskError, load_task
from .train import train

__all__ = [
    "ConfigError",
    "DataError",
    "Prediction",
    "Student",
    "StudentError",
    "Task",
    "TaskError",
    "TrainConfig",
    "annotate",
    "evaluate",
    "export_annotations",
    "load_config",
    "load_task",
    "predict",
    "run",
    "train",
]
