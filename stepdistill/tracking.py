"""Experiment tracking: a run's training log also goes to TensorBoard, W&B or MLflow, as
``report_to`` says (the setting of Hugging Face's trainer).

``report_to``: ``auto`` (the default: TensorBoard when the ``tensorboard`` package is
installed, nothing otherwise), ``none``, ``all`` (every one of them that is installed),
or a comma-separated list such as ``tensorboard,wandb`` (each must be installed; the
error says how). TensorBoard's event files go to ``<run>/tensorboard/``; W&B and MLflow
runs are named after the run folder and read their own settings from the environment
(``WANDB_PROJECT``, ``WANDB_MODE=offline``, ``MLFLOW_TRACKING_URI`` ...).

Only the process that writes the run folder reports. ``train.py`` calls ``start``, then
``Tracker.sync`` after each validation and ``Tracker.finish`` at the end: the tracker
sends the rows of the training log it has not sent yet, so the loop stays as it is.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from .config import ConfigError, TrainConfig

BACKENDS = ("tensorboard", "wandb", "mlflow")
INSTALL = {
    "tensorboard": "pip install 'stepdistill[tensorboard]'",
    "wandb": "pip install wandb",
    "mlflow": "pip install mlflow",
}


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


def chosen_backends(report_to: str) -> list[str]:
    """The backends ``report_to`` names; an error for an unknown or missing one."""
    value = report_to.strip().lower()
    if value in ("none", ""):
        return []
    if value == "auto":
        return ["tensorboard"] if installed("tensorboard") else []
    if value == "all":
        return [b for b in BACKENDS if installed(b)]
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ConfigError(
            f"report_to: unknown {', '.join(unknown)}; choose auto, all, none or any of "
            f"{', '.join(BACKENDS)}"
        )
    missing = [n for n in names if not installed(n)]
    if missing:
        raise ConfigError(
            f"report_to names {', '.join(missing)}, which is not installed: "
            + "; ".join(INSTALL[n] for n in missing)
        )
    return names


class Tracker:
    """Sends training-log rows and validation results to the chosen backends."""

    def __init__(self, backends: dict[str, Any], sent_steps: int = 0):
        self.backends = backends
        self.sent_log = sent_steps
        self.sent_history = 0
        self.sent_from_step = sent_steps

    def log(self, values: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        if "tensorboard" in self.backends:
            for key, value in values.items():
                self.backends["tensorboard"].add_scalar(key, value, step)
        if "wandb" in self.backends:
            self.backends["wandb"].log(values, step=step)
        if "mlflow" in self.backends:
            self.backends["mlflow"].log_metrics(values, step=step)

    def sync(self, log: list[dict[str, Any]], history: list[dict[str, Any]]) -> None:
        """Send the training-log rows (loss parts, learning rate) and validation results
        not sent yet."""
        if not self.backends:
            return
        # On a resumed run the log holds the earlier process's rows: those were sent then.
        fresh = [row for row in log[self.sent_log :] if row["step"] > self.sent_from_step]
        for row in fresh:
            self.log(
                {f"train/{k}": v for k, v in row.items() if k not in ("step", "seconds")},
                row["step"],
            )
        self.sent_log = len(log)
        for row in history[self.sent_history :]:
            if row["step"] > self.sent_from_step:
                self.log({"valid/accuracy": row["valid_accuracy"]}, row["step"])
        self.sent_history = len(history)
        if "tensorboard" in self.backends:
            self.backends["tensorboard"].flush()

    def finish(
        self, log: list[dict[str, Any]], history: list[dict[str, Any]], metrics: dict[str, Any]
    ) -> None:
        """Send what is left and the test result; close the backends."""
        self.sync(log, history)
        if not self.backends:
            return
        self.log({"test/accuracy": metrics["test_accuracy"]}, metrics["steps"])
        if "tensorboard" in self.backends:
            self.backends["tensorboard"].close()
        if "wandb" in self.backends:
            self.backends["wandb"].finish()
        if "mlflow" in self.backends:
            self.backends["mlflow"].end_run()


def start(config: TrainConfig, run_dir: Path | None, main: bool, step: int = 0) -> Tracker:
    """A tracker for one run (sending nothing in processes other than the main one, or
    with ``report_to: none``); ``step``: where a resumed run continues."""
    names = chosen_backends(config.report_to)
    if not main or run_dir is None or not names:
        return Tracker({}, step)
    backends: dict[str, Any] = {}
    if "tensorboard" in names:
        # torch's writer needs the tensorboard package (its event-file format); torch is
        # already loaded by training.
        from torch.utils.tensorboard import SummaryWriter

        backends["tensorboard"] = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        backends["tensorboard"].add_text("config", f"```\n{config.to_dict()}\n```", step)
    if "wandb" in names:
        import wandb

        wandb.init(
            name=Path(run_dir).name,
            config=config.to_dict(),
            dir=str(run_dir),
            resume="allow",
            # the run folder's full path, hashed: two sweeps' runs of one grid point differ
            id=hashlib.sha256(str(Path(run_dir).resolve()).encode()).hexdigest()[:16],
        )
        backends["wandb"] = wandb
    if "mlflow" in names:
        import mlflow

        mlflow.start_run(run_name=Path(run_dir).name)
        mlflow.log_params({k: v for k, v in config.to_dict().items() if v is not None})
        backends["mlflow"] = mlflow
    return Tracker(backends, step)
