"""Training throughput: a reference-style trainer against stepdistill's, same data and batch.

(a) reference: the Hugging Face ``Trainer`` with a ``compute_loss`` that runs two forward
    passes per step (label batch, rationale batch), fp32, each batch padded to its
    longest member, in dataset order — the way the paper's code trains.
(b) stepdistill: ``train.step_loss`` over packed, length-sorted micro-batches, sparse LM
    head, bf16 compute with fp32 master weights.

Both start from the same weights and see the same examples in the same order, so their
losses at each step are compared too. Each variant runs in a fresh child process (so its
peak RSS is its own), alternating a, b, a, b. The bf16 matmul peak is measured in the
same run. Usage:

    python benchmarks/train_throughput.py --steps 6 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time
from typing import Any


def matmul_peak(dtype_name: str, size: int = 2048, repeats: int = 5) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def batches(student: str, steps: int, batch_size: int) -> tuple[list[list[Any]], int]:
    """The same dss examples, in the same order, for both trainers."""
    from stepdistill.annotate import annotate
    from stepdistill.annotations import load_annotations
    from stepdistill.config import make_config
    from stepdistill.data import load_splits
    from stepdistill.models import load_student
    from stepdistill.tasks import load_task
    from stepdistill.training_data import encode_example, training_examples

    task = load_task("svamp")
    annotations_dir = "annotations/svamp-palm-replay"
    try:
        annotations = load_annotations(annotations_dir, "train")
    except Exception:
        annotate(task, "palm-replay", annotations_dir, quiet=True)
        annotations = load_annotations(annotations_dir, "train")
    config = make_config({"mode": "dss", "student": student})
    items, _ = training_examples(config, load_splits(task)["train"], annotations)
    _, tokenizer = load_student(student)
    encoded = [
        encode_example(tokenizer, config, item, False) for item in items[: steps * batch_size]
    ]
    return [
        encoded[i : i + batch_size] for i in range(0, len(encoded), batch_size)
    ], tokenizer.pad_token_id


def run_reference(student: str, steps: int, batch_size: int, queue: Any) -> None:
    import torch
    from transformers import Trainer, TrainingArguments

    from stepdistill.models import load_student
    from stepdistill.modes import LABEL, RATIONALE
    from stepdistill.packing import IGNORE, collate

    step_batches, pad = batches(student, steps, batch_size)
    model, _ = load_student(student)

    def pad_batch(rows: list[Any]) -> dict[str, Any]:
        batch = collate([[r] for r in rows], pad, False)  # padded to the longest row
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "labels": batch["labels"],
        }

    class StepDataset(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(step_batches)

        def __getitem__(self, index: int) -> Any:
            return step_batches[index]

    def collator(items: list[Any]) -> dict[str, Any]:
        rows = [row for item in items for example in item for row in example]
        return {
            "label": pad_batch([r for r in rows if r.kind == LABEL]),
            "rationale": pad_batch([r for r in rows if r.kind == RATIONALE]),
        }

    stats: dict[str, Any] = {"losses": [], "tokens": 0, "seconds": 0.0}

    class TwoPassTrainer(Trainer):
        def compute_loss(
            self,
            model: Any,
            inputs: Any,
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            # The paper's code: one forward pass per task, each with HF's mean token loss.
            label_loss = model(**inputs["label"]).loss
            rationale_loss = model(**inputs["rationale"]).loss
            loss = label_loss + rationale_loss  # = 2 · (α·L_label + (1-α)·L_rationale), α = 0.5
            stats["losses"].append(loss.item())
            stats["tokens"] += sum(
                int(inputs[k]["attention_mask"].sum()) for k in ("label", "rationale")
            )
            return loss

        def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset)  # dataset order

    arguments = TrainingArguments(
        output_dir="/tmp/stepdistill-bench-reference",
        per_device_train_batch_size=1,
        max_steps=steps,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        logging_steps=10**9,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = TwoPassTrainer(
        model=model, args=arguments, train_dataset=StepDataset(), data_collator=collator
    )
    started = time.perf_counter()
    trainer.train()
    stats["seconds"] = time.perf_counter() - started
    stats["ignore"] = IGNORE
    finish(queue, "reference", stats, model, steps, batch_size)


def run_stepdistill(student: str, steps: int, batch_size: int, queue: Any) -> None:
    import torch

    from stepdistill.config import TrainConfig
    from stepdistill.master_weights import MasterWeights
    from stepdistill.models import load_student
    from stepdistill.packing import collate, micro_batches
    from stepdistill.train import step_loss

    step_batches, pad = batches(student, steps, batch_size)
    model, _ = load_student(student)
    model.train()
    config = TrainConfig()
    weights = MasterWeights(model, enabled=True)
    optimizer = torch.optim.AdamW(weights.master, lr=1e-4, weight_decay=0.0)
    stats: dict[str, Any] = {"losses": [], "tokens": 0, "seconds": 0.0}
    started = time.perf_counter()
    for step_examples in step_batches[:steps]:
        rows = [row for example in step_examples for row in example]
        groups = [
            collate(g, pad, False)
            for g in micro_batches(rows, config.micro_batch_tokens, False, config.pack_length)
        ]
        totals = step_loss(model, groups, 1.0)
        weights.gradients_to_master()
        torch.nn.utils.clip_grad_norm_(weights.master, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        weights.master_to_model()
        stats["losses"].append(totals["loss"])
        stats["tokens"] += sum(g["tokens"] for g in groups)
    stats["seconds"] = time.perf_counter() - started
    finish(queue, "stepdistill", stats, model, steps, batch_size)


def finish(
    queue: Any, name: str, stats: dict[str, Any], model: Any, steps: int, batch_size: int
) -> None:
    queue.put(
        {
            "name": name,
            "tokens_per_second": stats["tokens"] / stats["seconds"],
            "examples_per_second": steps * batch_size / stats["seconds"],
            "seconds": stats["seconds"],
            "losses": stats["losses"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--student", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    context = mp.get_context("spawn")
    peaks = [matmul_peak("bfloat16")]
    results: dict[str, list[dict[str, Any]]] = {"reference": [], "stepdistill": []}
    for repeat in range(args.repeats):
        for name, target in (("reference", run_reference), ("stepdistill", run_stepdistill)):
            queue = context.Queue()
            process = context.Process(
                target=target, args=(args.student, args.steps, args.batch_size, queue)
            )
            process.start()
            result = queue.get()
            process.join()
            results[name].append(result)
            print(
                f"repeat {repeat + 1} {name:<12} {result['tokens_per_second']:7.1f} tokens/s "
                f"{result['examples_per_second']:5.2f} examples/s  peak RSS {result['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    peaks.append(matmul_peak("bfloat16"))
    peak = statistics.fmean(peaks)
    reference = statistics.median(r["tokens_per_second"] for r in results["reference"])
    ours = statistics.median(r["tokens_per_second"] for r in results["stepdistill"])
    parameters = results["stepdistill"][0]["parameters"]
    achieved = 6 * parameters * ours / 1e9
    print()
    print(
        f"student {args.student} ({parameters / 1e6:.0f}M parameters), SVAMP dss, {args.batch_size} examples/step, {args.steps} steps, {args.repeats} repeats"
    )
    print(f"bf16 matmul peak (2048^3, this run): {peak:.0f} GFLOP/s")
    print(
        f"(a) reference  {reference:7.1f} tokens/s (median)  peak RSS {max(r['peak_rss_mb'] for r in results['reference']):.0f} MB"
    )
    print(
        f"(b) stepdistill {ours:6.1f} tokens/s (median)  peak RSS {max(r['peak_rss_mb'] for r in results['stepdistill']):.0f} MB"
    )
    print(f"ratio b/a: {ours / reference:.2f}x")
    print(
        f"b at 6·N·tokens: {achieved:.0f} GFLOP/s = {100 * achieved / peak:.0f}% of the measured bf16 peak"
    )
    a_losses, b_losses = results["reference"][0]["losses"], results["stepdistill"][0]["losses"]
    print(
        "loss per step (a vs b): "
        + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(a_losses, b_losses, strict=False))
    )
    print(
        json.dumps(
            {
                "reference_tokens_per_second": reference,
                "stepdistill_tokens_per_second": ours,
                "ratio": ours / reference,
                "peak_gflops": peak,
                "fraction_of_peak": achieved / peak,
            }
        )
    )


if __name__ == "__main__":
    main()
