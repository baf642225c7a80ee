"""A run is a folder: config.yaml, task.yaml, model/ (HF format), metrics.json,
predictions/, train_log.jsonl. This module reads and writes its small files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import TrainConfig, make_config
from .io import atomic_write_text
from .tasks import Task, task_from_dict


@dataclass
class Run:
    path: Path
    config: TrainConfig
    task: Task


def save_run_files(path: Path, config: TrainConfig, task: Task) -> None:
    """The resolved config and the task definition, so the folder stands on its own."""
    atomic_write_text(
        path / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
    )
    task_dict = dataclasses.asdict(task)
    atomic_write_text(
        path / "task.yaml", yaml.safe_dump(task_dict, sort_keys=False, allow_unicode=True)
    )


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
    config = make_config(yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")))
    raw: dict[str, Any] = yaml.safe_load((path / "task.yaml").read_text(encoding="utf-8"))
    source = raw.pop("source", "")
    return Run(path, config, task_from_dict(raw, source=source))
