"""Resumable training state in a run folder: ``checkpoint/state.pt`` (master weights,
optimizer, scheduler, RNG states, data position, logs) and ``best-weights.pt`` (the
best-on-validation weights so far). Every file is written beside its target and renamed
into place, so a kill at any point leaves the last complete checkpoint (or the one
before it, ``checkpoint.old``) to resume from. Loads use ``weights_only=True``: a
checkpoint file cannot run code.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any


def save_checkpoint(
    run_dir: Path,
    weights: Any,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    best: dict[str, Any] | None,
) -> None:
    """Everything needed to continue: weights, optimizer, scheduler, RNG, data position.
    Written to a temporary folder and renamed, so a kill never leaves half a checkpoint."""

    import torch

    if best is not None:  # only when it changed: the best weights are as large as the model
        tmp = run_dir / "best-weights.pt.tmp"
        torch.save(best, tmp)
        tmp.replace(run_dir / "best-weights.pt")
    staging = run_dir / "checkpoint.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    torch.save(
        {
            "master": weights.snapshot(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            **state,
        },
        staging / "state.pt",
    )
    old = run_dir / "checkpoint.old"
    if (run_dir / "checkpoint").exists():
        (run_dir / "checkpoint").replace(old)
    staging.replace(run_dir / "checkpoint")
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    checkpoint = run_dir / "checkpoint" / "state.pt"
    if not checkpoint.is_file():
        old = run_dir / "checkpoint.old" / "state.pt"  # killed between the two renames
        checkpoint = old if old.is_file() else checkpoint
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from")
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    best_path = run_dir / "best-weights.pt"
    best = (
        torch.load(best_path, weights_only=True, map_location="cpu")
        if best_path.is_file()
        else {"accuracy": -1.0, "step": 0, "state": None}
    )
    return state, best


def remove_checkpoints(run_dir: Path) -> None:
    """A complete run needs no resume state (``.tmp``: left by a kill mid-save)."""
    for leftover in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
        shutil.rmtree(run_dir / leftover, ignore_errors=True)
    for leftover_file in ("best-weights.pt", "best-weights.pt.tmp"):
        (run_dir / leftover_file).unlink(missing_ok=True)


def device_rng_state(device: str) -> dict[str, Any]:
    """This process's random-number states: the CPU's, and its GPU's when it trains on one."""
    import torch

    state = {"cpu": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def restore_state(
    run_dir: Path,
    weights: Any,
    optimizer: Any,
    scheduler: Any,
    rng: random.Random,
    processes: Any,
    device: str = "cpu",
    scaler: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a run's last checkpoint into the training objects; its saved state and best."""
    import torch

    saved, best = load_checkpoint(run_dir)
    with torch.no_grad():
        for master, value in zip(weights.master, saved["master"].values(), strict=True):
            master.copy_(value)
    weights.master_to_model()
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    per_process = saved.get("torch_rng_per_process") or []
    mine = per_process[processes.rank] if len(per_process) == processes.world else None
    if not isinstance(mine, dict):  # a checkpoint from before the GPU's state was kept
        mine = {"cpu": mine if mine is not None else saved["torch_rng"]}
    torch.set_rng_state(mine["cpu"])
    if "cuda" in mine and device.startswith("cuda"):  # the same run on a GPU again
        torch.cuda.set_rng_state(mine["cuda"], torch.device(device))
    if scaler is not None and "scaler" in saved:
        scaler.load_state_dict(saved["scaler"])
    rng.setstate(saved["python_rng"])
    return saved, best
