"""Sweeps: expand a grid of runs from a YAML file, train each into its own folder, and
append one row per finished run to a results file. Runs already in the results file are
skipped, so a killed sweep resumes where it stopped: a run killed mid-training
continues from its checkpoint, and one killed after training but before its row was
written is recorded from its metrics without training again.

```yaml
name: svamp-modes
output_dir: sweeps/svamp          # runs/ and results.jsonl go here
base: {task: svamp, epochs: 4}    # TrainConfig fields shared by every run
grid:                             # every combination is one run
  mode: [standard, distill, dss, single]
  train_fraction: [0.125, 0.25, 0.5, 1.0]
  seed: [0, 1, 2]
```
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from .config import ConfigError, TrainConfig, make_config
from .io import append_jsonl, cut_torn_tail, read_jsonl
from .modes import variant
from .parallel import launch_rank
from .report import report
from .results import read_results, recorded_runs
from .run import ensure_annotations, teacher_accuracy
from .run_folder import load_run
from .stats import correctness_record, teacher_record
from .tasks import Task, load_task
from .train import train
from .training_data import needs_annotations, uses_teacher_labels

RESULT_FIELDS = (
    "task",
    "mode",
    "label_source",
    "rationale_filter",
    "train_fraction",
    "student",
    "seed",
)


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep file. ``grid`` is a mapping (every combination is a run) or a list of such
    mappings (each expanded in turn: runs that are not a full cross product); with
    ``order_by: seed`` the runs are then ordered by seed, so each seed's runs complete
    together."""
    spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or "grid" not in spec:
        raise ConfigError(
            f"{path}: a sweep file needs a 'grid' mapping (and optional 'base', 'output_dir')"
        )
    unknown = set(spec) - {"name", "output_dir", "base", "grid", "order_by"}
    if unknown:
        raise ConfigError(f"{path}: unknown sweep key(s) {sorted(unknown)}")
    grids = spec["grid"] if isinstance(spec["grid"], list) else [spec["grid"]]
    for grid in grids:
        if not isinstance(grid, dict):
            raise ConfigError(f"{path}: each grid must be a mapping of key: [values]")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: grid.{key} must be a non-empty list")
    if spec.get("order_by") not in (None, "seed"):
        raise ConfigError(f"{path}: order_by can only be seed")
    spec.setdefault("output_dir", str(Path("sweeps") / (spec.get("name") or Path(path).stem)))
    return spec


def expand(spec: dict[str, Any]) -> list[TrainConfig]:
    """Every combination of the grid on top of the base config (validated up front)."""
    configs = []
    for grid in spec["grid"] if isinstance(spec["grid"], list) else [spec["grid"]]:
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            values_map = {**(spec.get("base") or {}), **dict(zip(keys, values, strict=True))}
            config = make_config(values_map)
            config.output_dir = str(Path(spec["output_dir"]) / "runs")
            config.run_name = run_id(config)
            configs.append(config)
    if spec.get("order_by") == "seed":
        configs.sort(key=lambda c: c.seed)  # stable: within a seed, the grids' order
    ids = [c.run_name for c in configs]
    if len(set(ids)) != len(ids):
        raise ConfigError("the grid produces duplicate runs")
    return configs


def run_id(config: TrainConfig) -> str:
    """A readable id that names what varies in the paper's experiments."""
    task = Path(config.task).stem
    student = Path(config.student).name
    name = config.recipe or variant(config.mode, config.label_source, config.rationale_filter)
    return f"{task}-{name}-f{config.train_fraction:g}-{student}-s{config.seed}"


def append_result(path: str | Path, row: dict[str, Any]) -> None:
    """One row, on a line of its own (a torn last line left by a crash is cut off first)."""
    append_jsonl(path, row)


def earlier_folders(config: TrainConfig) -> list[Path]:
    """Run folders of this grid point (``name``, ``name-2`` ...) holding the same config,
    newest ``-N`` first."""
    runs = Path(config.output_dir)
    name = config.run_name or ""
    candidates = [
        runs / name,
        *sorted(runs.glob(f"{name}-*"), key=lambda p: p.stat().st_mtime, reverse=True),
    ]
    folders = []
    for folder in candidates:
        suffix = folder.name[len(name) :]
        if not folder.is_dir() or (suffix and not suffix[1:].isdigit()):
            continue
        try:
            if not same_run(load_run(folder).config, config):
                continue  # same grid point, another config: not this run
        except (OSError, ValueError, TypeError, yaml.YAMLError):
            continue  # killed before its files were written
        folders.append(folder)
    return folders


def same_run(a: TrainConfig, b: TrainConfig) -> bool:
    """Two configs of the same run: equal in everything but the device they train on,
    whether training was compiled, and the replay teacher's old name (``palm-replay``, for
    runs saved before it was ``replay``)."""

    def key(config: TrainConfig) -> dict[str, Any]:
        teacher = "replay" if config.teacher == "palm-replay" else config.teacher
        return {**config.to_dict(), "device": None, "compile": None, "teacher": teacher}

    return key(a) == key(b)


def previous_attempt(folders: list[Path]) -> tuple[Path | None, str]:
    """Of a run's earlier folders (``earlier_folders``), the one to reuse and what is left
    of it: ``"finished"`` (metrics written, row not: killed in between), ``"checkpoint"``
    (killed mid-training) or ``""`` (none to reuse)."""
    found: tuple[Path | None, str] = (None, "")
    for folder in folders:
        if (folder / "metrics.json").is_file():
            return folder, "finished"
        if not found[0] and any(
            (folder / name).is_dir() for name in ("checkpoint", "checkpoint.old")
        ):
            found = (folder, "checkpoint")
    return found


UNSTARTED = {"config.yaml", "task.yaml"}
"""What a run folder holds before its first checkpoint (besides a tracker's ``tensorboard/``)."""


def remove_unstarted(folders: list[Path]) -> list[Path]:
    """Delete those of a run's earlier folders that hold only the files written before
    training (killed before the first checkpoint: nothing to resume), so the rerun takes
    the run's own name instead of a new ``-2``, ``-3`` folder. Under a multi-process
    launch only rank 0 does this: it alone creates run folders, so another process could
    take the one rank 0 has just created for this run for an unstarted one."""
    if launch_rank() != 0:
        return []
    removed = []
    for folder in folders:
        if {entry.name for entry in folder.iterdir()} - {"tensorboard"} == UNSTARTED:
            for entry in UNSTARTED:
                (folder / entry).unlink()
            shutil.rmtree(folder / "tensorboard", ignore_errors=True)
            folder.rmdir()
            removed.append(folder)
    return removed


def write_report(results_path: Path, output: str | Path) -> None:
    """The sweep's report so far; a failure to write it is printed, and the sweep goes on
    (its rows are what counts, and ``stepdistill report`` can write the report later)."""
    try:
        report(results_path, output)
    except Exception as error:  # noqa: BLE001 - a plot must not stop days of training
        print(f"report not written to {output}: {type(error).__name__}: {error}")


def teacher_test_accuracy(config: TrainConfig, task: Task) -> float | None:
    """The teacher's test accuracy for a row (standard fine-tuning's rows too), from its
    rationale dataset, annotated the first time it is needed."""
    return teacher_accuracy(ensure_annotations(config, task))


def teacher_correctness(
    config: TrainConfig, task: Task, predictions: list[dict[str, Any]]
) -> dict[str, str]:
    """The teacher's per-problem correctness on the run's test problems (``teacher_record``),
    from the rationale dataset's test rows, so the report can pair student and teacher."""
    teacher_rows = ensure_annotations(config, task) / "test.jsonl"
    if not teacher_rows.is_file():
        return {}
    return teacher_record(predictions, read_jsonl(teacher_rows))


def sweep(
    path: str | Path,
    dry_run: bool = False,
    report_to: str | Path | None = None,
    device: str | None = None,
    only: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run every grid point not yet in ``<output_dir>/results.jsonl``; returns all rows.

    ``only``: shell-style patterns of run ids (``*-f0.25-*``); when given, only the runs
    matching one of them are trained (to split a sweep across machines or sessions, or
    to run one run of it), in the sweep's order.

    A run killed mid-training continues from its checkpoint; a run whose training
    finished but whose row was not written yet is recorded from its metrics. With
    ``report_to``, the report is written there again after every row, so a sweep that
    runs for days has a current report whenever it is stopped."""
    spec = load_sweep(path)
    results_path = Path(spec["output_dir"]) / "results.jsonl"
    configs = expand(spec)
    for config in configs:  # where to train is not part of what a run is
        config.device = device or config.device
    cut_torn_tail(results_path)
    done = recorded_runs(results_path)
    todo = [c for c in configs if c.run_name not in done]
    chosen = ""
    if only:
        unmatched = [p for p in only if not any(fnmatchcase(c.run_name, p) for c in configs)]
        if unmatched:
            raise ConfigError(
                f"{path}: no run of the sweep matches {', '.join(map(repr, unmatched))}"
                f" (its runs: {', '.join(c.run_name for c in configs)})"
            )
        unrecorded = len(todo)
        todo = [c for c in todo if any(fnmatchcase(c.run_name, p) for p in only)]
        chosen = f" ({len(todo)} of the {unrecorded} chosen by --only)"
    print(
        f"sweep {spec.get('name', path)}: {len(configs)} runs,"
        f" {sum(c.run_name in done for c in configs)} done, {len(todo)} to run{chosen}"
    )
    tasks: dict[str, Task] = {}  # each task loaded once, and handed to train
    for index, config in enumerate(todo, start=1):
        if config.run_name in recorded_runs(results_path):
            print(f"[{index}/{len(todo)}] {config.run_name} (recorded meanwhile, by another sweep)")
            continue
        earlier = earlier_folders(config)
        folder, left = previous_attempt(earlier)
        print(
            f"[{index}/{len(todo)}] {config.run_name}"
            + {"finished": " (trained; recording it)", "checkpoint": f" (resuming {folder})"}.get(
                left, ""
            )
        )
        if dry_run:
            continue
        started = time.time()
        if config.task not in tasks:
            tasks[config.task] = load_task(config.task)
        task = tasks[config.task]
        if needs_annotations(config):  # the teacher's rationale dataset, annotated once
            ensure_annotations(config, task)
        if left == "finished":
            assert folder is not None
            metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        elif left == "checkpoint":
            metrics = train(config, resume=folder, task=task, device=device)
        else:
            remove_unstarted(earlier)
            metrics = train(config, task=task)
        # each test problem's correctness, for the report's problem-by-problem statistics
        run_dir = folder if left == "finished" and folder else Path(metrics["run_dir"])
        predictions_file = run_dir / "predictions" / "test.jsonl"
        predictions = read_jsonl(predictions_file) if predictions_file.is_file() else None
        row = {
            "run_id": config.run_name,
            **({"recipe": config.recipe} if config.recipe else {}),
            **{key: getattr(config, key) for key in RESULT_FIELDS},
            # the labels it trained on (distill always takes the teacher's, whatever the
            # config's label_source, which only dss / single read)
            "label_source": "teacher" if uses_teacher_labels(config) else "gold",
            "task": metrics["task"],
            "test_accuracy": metrics["test_accuracy"],
            "valid_accuracy": metrics["valid_accuracy"],
            "teacher_test_accuracy": teacher_test_accuracy(config, task),
            "train_examples": metrics["train_examples"],
            "steps": metrics["steps"],
            "best_step": metrics["best_step"],
            "run_dir": metrics["run_dir"],
            "wall_seconds": metrics["wall_seconds"] if left else round(time.time() - started, 1),
            # the precision the run trained in (depends on the hardware)
            "bf16": metrics.get("bf16"),
            # validation after each evaluation: whether a longer budget would have helped
            "valid_history": metrics.get("valid_history"),
            **(correctness_record(predictions) if predictions is not None else {}),
            **(teacher_correctness(config, task, predictions) if predictions is not None else {}),
        }
        if config.run_name in recorded_runs(results_path):
            # two sweeps trained this run at once: the first to finish keeps its row
            print(f"{config.run_name}: recorded meanwhile by another sweep; row not written twice")
            continue
        # under a multi-process launch every process trains; one writes the row
        if launch_rank() == 0:
            append_result(results_path, row)
            if report_to is not None:
                write_report(results_path, report_to)
    return read_results(results_path)
