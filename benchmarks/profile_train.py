"""Where a training step's time goes: phases and the heaviest operators.

Runs the trainer's own step (``train.step_loss`` over packed micro-batches, bf16 compute
over fp32 master weights, AdamW) on SmolLM2-135M and SVAMP ``dss`` examples (the batches
of ``benchmarks/train_throughput.py``), one warm-up step, then ``--steps`` timed steps.
Prints the time of each phase (forward + backward, gradients to the fp32 masters,
clipping, the optimizer step, masters back to the model) and, with ``--operators``, the
operators with the most self CPU time under ``torch.profiler`` (one extra step).

    python benchmarks/profile_train.py --steps 3 --operators 25
    python benchmarks/profile_train.py --steps 3 --fused     # AdamW(fused=True)
    python benchmarks/profile_train.py --steps 3 --compile model  # device.compile_student
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import torch
    from train_throughput import batches, matmul_peak

    from stepdistill.config import TrainConfig
    from stepdistill.master_weights import MasterWeights
    from stepdistill.models import load_student
    from stepdistill.packing import collate, micro_batches
    from stepdistill.train import step_loss

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--student", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--operators", type=int, default=0, help="print the top N operators")
    parser.add_argument("--pack-length", type=int, default=256, help="0: one row per sequence")
    parser.add_argument(
        "--no-mask", action="store_true", help="unpacked rows: causal attention, no padding mask"
    )
    parser.add_argument("--fused", action="store_true", help="AdamW(fused=True)")
    parser.add_argument("--compile", choices=["model", "layers"], help="compile the student")
    parser.add_argument(
        "--attention",
        default="sdpa",
        choices=["sdpa", "sdpa-math", "eager"],
        help="sdpa: the kernel torch picks; sdpa-math: SDPA's matmul path; eager: HF's own",
    )
    args = parser.parse_args()

    step_batches, pad = batches(args.student, args.steps + 2, args.batch_size)
    model, _ = load_student(args.student)
    model.train()
    if args.attention == "eager":
        model.set_attn_implementation("eager")
    config = TrainConfig()
    weights = MasterWeights(model, enabled=True)
    if args.compile:
        from stepdistill.device import compile_student

        compile_student(model, regional=args.compile == "layers")
    optimizer = torch.optim.AdamW(
        weights.master, lr=1e-4, weight_decay=0.0, **({"fused": True} if args.fused else {})
    )
    phases: dict[str, float] = defaultdict(float)
    tokens = 0
    losses: list[float] = []

    def step(examples: list[Any], timed: bool) -> int:
        rows = [row for example in examples for row in example]
        groups = [
            collate(g, pad, False)
            for g in micro_batches(rows, config.micro_batch_tokens, False, args.pack_length)
        ]
        if args.no_mask:
            for g in groups:
                g.pop("attention_mask", None)
        marks = [time.perf_counter()]
        if args.attention == "sdpa-math":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel([SDPBackend.MATH]):
                losses.append(step_loss(model, groups, 1.0)["loss"])
        else:
            losses.append(step_loss(model, groups, 1.0)["loss"])
        marks.append(time.perf_counter())
        weights.gradients_to_master()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(weights.master, 1.0)
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        weights.master_to_model()
        marks.append(time.perf_counter())
        if timed:
            names = (
                "forward + backward",
                "gradients to masters",
                "clip",
                "optimizer",
                "masters to model",
            )
            for name, a, b in zip(names, marks, marks[1:], strict=False):
                phases[name] += b - a
        return sum(g["tokens"] for g in groups)

    started = time.perf_counter()
    step(step_batches[0], False)
    print(f"warm-up step: {time.perf_counter() - started:.1f} s", flush=True)
    for examples in step_batches[1 : args.steps + 1]:
        tokens += step(examples, True)
    total = sum(phases.values())
    parameters = sum(p.numel() for p in model.parameters())
    peak = matmul_peak("bfloat16")
    print(f"{args.steps} steps, {tokens} tokens, {total:.1f} s: {tokens / total:.1f} tokens/s")
    print(
        f"6·N·tokens = {6 * parameters * tokens / total / 1e9:.0f} GFLOP/s; "
        f"bf16 matmul peak (this run) {peak:.0f} GFLOP/s"
    )
    print("losses per step: " + ", ".join(f"{x:.4f}" for x in losses))
    for name, seconds in phases.items():
        print(f"  {name:<22} {seconds / args.steps:6.2f} s/step  {100 * seconds / total:5.1f}%")
    if args.operators:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(step_batches[args.steps + 1], False)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.operators))


if __name__ == "__main__":
    main()
