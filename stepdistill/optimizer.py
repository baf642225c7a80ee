"""The optimizer side of training: AdamW over the master weights, its learning-rate
schedule (linear warmup, then linear decay to 0 at the last step), and seeding."""

from __future__ import annotations

import random
from typing import Any

from .config import TrainConfig


def make_optimizer(parameters: list[Any], config: TrainConfig, total_steps: int) -> tuple[Any, Any]:
    """AdamW and its schedule: warmup over ``warmup_ratio`` of the steps, then linear decay."""
    import torch

    # The fused step (one kernel over all parameters) where torch has it for these
    # tensors: fp32 master weights on the CPU or a GPU. It does the for-each step's
    # arithmetic; on the CPU it took the optimizer from ~4% of a step to ~1%
    # (benchmarks/profile_train.py).
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in parameters)
    optimizer = torch.optim.AdamW(
        parameters,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        **({"fused": True} if fused and parameters else {}),
    )
    warmup = round(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(
            (s + 1) / max(1, warmup), max(0.0, (total_steps - s) / max(1, total_steps - warmup))
        ),
    )
    return optimizer, scheduler


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- the stage
