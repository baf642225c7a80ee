"""Data parallelism for ``stepdistill train`` under a multi-process launcher.

``accelerate launch --multi_gpu --num_processes N -m stepdistill.cli train ...`` (or
``torchrun --nproc-per-node N``) starts N copies of the trainer. Each holds the whole
student (it is small) and the same optimizer state, takes its share of every global
batch, and the processes sum their gradients before each optimizer step, so every copy
makes the same update: a run is the same step for step whatever N is.

Nothing here is imported, and no process group is made, in a plain single process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any


def launch_rank() -> int:
    """This process's rank as the launcher set it (0 when not launched), read without
    setting up any process group: for work around the trainer, such as making run
    folders or writing results, that only one process should do."""
    return int(os.environ.get("RANK", "0"))


class Processes:
    """This process's place among the trainer's processes (rank 0 of 1 when not launched)."""

    def __init__(self, device: str = "cpu") -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.device = device
        """Where collectives run: gloo between CPU processes, NCCL between GPUs."""
        if self.world > 1:
            for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
                if os.environ.get(name, "false").lower() == "true":
                    raise ValueError(
                        "stepdistill train keeps a whole copy of the student in every process (data parallel); "
                        "FSDP / DeepSpeed sharding is not supported, so it refuses rather than train wrongly: "
                        "launch without them, and for a student that does not fit one GPU train LoRA adapters "
                        "(lora_rank > 0: the base weights stay frozen, with no gradients or optimizer state)"
                    )
            from accelerate import PartialState

            # On the CPU, gloo between processes (whatever GPUs the machine has); on GPUs, NCCL
            # with one process per GPU.
            state = PartialState(cpu=not device.startswith("cuda"))
            self.world, self.rank = state.num_processes, state.process_index

    @property
    def main(self) -> bool:
        return self.rank == 0

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it may annotate or convert the student once, into
        shared folders); the others run it after, and find the work done."""
        if self.world > 1 and not self.main:
            self.barrier()
        yield
        if self.world > 1 and self.main:
            self.barrier()

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every process."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def share(self, items: Sequence[Any]) -> Sequence[Any]:
        """This process's contiguous slice of ``items`` (for sharded evaluation)."""
        count = len(items)
        return items[self.rank * count // self.world : (self.rank + 1) * count // self.world]

    def gather(self, items: list[Any]) -> list[Any]:
        """Every process's ``items``, concatenated in rank order, on every process."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return list(gather_object(items))

    def sum(self, values: list[int]) -> list[int]:
        """Integers summed over the processes."""
        if self.world == 1:
            return values
        import torch
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.int64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def sum_gradients(self, parameters: list[Any], extra: list[float]) -> list[float]:
        """Sum the parameters' ``.grad`` over the processes, with a few floats riding
        along in the same call; returns the summed floats.

        A process without a gradient for a parameter (it had no rows that reach it, or
        no rows at all) adds zero; a parameter that no process has a gradient for keeps
        none, as in one process (the optimizer then skips it). One flat fp32 buffer, one
        all-reduce: a ring all-reduce hands every process the same sums, so the copies of
        the model stay identical without any broadcast."""
        if self.world == 1:
            return extra
        import torch
        import torch.distributed as dist

        pieces = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten().float()
            for p in parameters
        ]
        present = [float(p.grad is not None) for p in parameters]
        flags = torch.tensor(present + list(extra), dtype=torch.float32, device=self.device)
        flat = torch.cat([*pieces, flags])
        dist.all_reduce(flat)
        offset = 0
        flags = flat[-len(present) - len(extra) :].tolist()
        for p, flag in zip(parameters, flags, strict=False):
            p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype) if flag > 0 else None
            offset += p.numel()
        return flags[len(present) :]


def shard(batch: list[int], sizes: Sequence[int], processes: Processes) -> list[int]:
    """This process's examples of a global batch. Examples are dealt longest first to the
    process with the fewest tokens so far, so the processes finish a step at about the
    same time. Every process computes the same deal (no communication). Any split gives
    the same step: the loss is normalised by the token counts of the whole batch."""
    if processes.world == 1:
        return batch
    load = [0] * processes.world
    mine = []
    for index in sorted(batch, key=lambda i: (-sizes[i], i)):
        rank = min(range(processes.world), key=lambda r: (load[r], r))
        load[rank] += sizes[index]
        if rank == processes.rank:
            mine.append(index)
    return sorted(mine, key=batch.index)
