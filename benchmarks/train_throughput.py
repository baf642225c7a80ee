"""Training throughput: a reference-style trainer against stepdistill's, same data and batch.

(a) reference: the Hugging Face ``Trainer`` with a ``compute_loss`` that runs two forward
    passes per step (label batch, rationale batch), fp32, each batch padded to its
    longest member, in dataset order — the way the paper's code trains.
(b) stepdistill: ``train.step_loss`` over packed, length-sorted micro-batches, sparse LM
    head, bf16 compute with fp32 master weights.

Both start from the same weights and see the same examples in the same order, so their
losses at each step are compared too. Each variant runs in a fresh child process (so its
peak RSS is its own), alternating a, b, a, b. The bf16 matmul peak is measured in the
same run (fp32's for the fp32 variants). Usage:

    python benchmarks/train_throughput.py --steps 6 --repeats 2
    python benchmarks/train_throughput.py --student gemma3-270m --variants stepdistill --steps 3 --repeats 1

The share of the matmul peak is given twice: 6·N·tokens over all N parameters (as
before), and over the parameters without the embedding matrix, whose lookup is no matmul
and whose tied LM head runs at target positions only. They differ little for SmolLM2
(28M of 135M are embeddings) and a lot for Gemma 3 270M (168M of 268M: a 262,144-token
vocabulary); the true figure lies between them.

On a CPU without native bf16 (``python benchmarks/precision.py``), compare the precisions:

    python benchmarks/train_throughput.py --variants stepdistill,fp32,fp32-compiled
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
    items, _ = training_examples(config, load_splits(task)["train"], annotations, task)
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


def run_stepdistill(
    student: str, steps: int, batch_size: int, queue: Any, variant: str = "stepdistill"
) -> None:
    """Variants: ``today`` is the trainer before issue 28 (AdamW's for-each step, no
    compilation); ``fused`` adds the fused AdamW step; ``stepdistill`` is the trainer as
    it now runs by default on a CPU with native bf16 (``train.compile_student`` when the
    config's ``compile`` is on); ``compiled`` compiles the whole transformer body,
    ``regional`` each decoder layer. ``fp32`` is the trainer as it runs by default on a CPU
    without native bf16 (fp32 throughout, compiled only where ``compile_pays`` says so),
    ``fp32-compiled`` the same with each decoder layer compiled."""
    import torch

    from stepdistill.config import TrainConfig
    from stepdistill.device import compile_pays, compile_student
    from stepdistill.master_weights import MasterWeights
    from stepdistill.models import load_student
    from stepdistill.packing import collate, micro_batches
    from stepdistill.train import step_loss

    step_batches, pad = batches(student, steps + 1, batch_size)
    model, _ = load_student(student)
    model.train()
    config = TrainConfig()
    bf16 = not variant.startswith("fp32")
    weights = MasterWeights(model, enabled=bf16)
    if variant in ("stepdistill", "fp32") and compile_pays(
        config.compile, model, "cpu", bf16, False
    ):
        compile_student(model)  # as train() decides it for this student and precision
    elif variant in ("compiled", "regional", "fp32-compiled"):
        compile_student(model, regional=variant != "compiled")
    optimizer = torch.optim.AdamW(
        weights.master, lr=1e-4, weight_decay=0.0, **({} if variant == "today" else {"fused": True})
    )
    stats: dict[str, Any] = {"losses": [], "tokens": 0, "seconds": 0.0}
    started = time.perf_counter()
    for index, step_examples in enumerate(step_batches[: steps + 1]):
        if index == 1:  # the first step is a warm-up (and compiles): not timed
            stats["warmup_seconds"] = time.perf_counter() - started
            started = time.perf_counter()
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
        if index:
            stats["tokens"] += sum(g["tokens"] for g in groups)
    stats["seconds"] = time.perf_counter() - started
    finish(queue, variant, stats, model, steps, batch_size)


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
            "warmup_seconds": stats.get("warmup_seconds", 0.0),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "parameters": sum(p.numel() for p in model.parameters()),
            "embedding_parameters": model.get_input_embeddings().weight.numel(),
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
    parser.add_argument(
        "--variants",
        default="today,stepdistill",
        help="comma-separated, run in this order each repeat: reference, today, fused, "
        "compiled, regional, stepdistill, fp32, fp32-compiled (the first is the baseline of "
        "the ratios)",
    )
    args = parser.parse_args()
    variants = args.variants.split(",")
    context = mp.get_context("spawn")
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name in variants:
            # The matmul peak of the variant's precision, beside it: the machine's speed drifts.
            peak = matmul_peak("float32" if name.startswith("fp32") else "bfloat16")
            queue = context.Queue()
            if name == "reference":
                target, extra = run_reference, ()
            else:
                target, extra = run_stepdistill, (name,)
            process = context.Process(
                target=target, args=(args.student, args.steps, args.batch_size, queue, *extra)
            )
            process.start()
            result = queue.get()
            process.join()
            result["peak_gflops"] = peak
            result["fraction_of_peak"] = (
                6 * result["parameters"] * result["tokens_per_second"] / 1e9 / peak
            )
            body = result["parameters"] - result["embedding_parameters"]
            result["fraction_of_peak_body"] = 6 * body * result["tokens_per_second"] / 1e9 / peak
            results[name].append(result)
            print(
                f"repeat {repeat + 1} {name:<12} {result['tokens_per_second']:7.1f} tokens/s "
                f"{result['examples_per_second']:5.2f} examples/s  warm-up {result['warmup_seconds']:5.1f} s  "
                f"peak RSS {result['peak_rss_mb']:.0f} MB  matmul peak beside it {peak:.0f} GFLOP/s "
                f"({100 * result['fraction_of_peak']:.0f}%, "
                f"{100 * result['fraction_of_peak_body']:.0f}% without the embeddings)",
                flush=True,
            )
    parameters = results[variants[-1]][0]["parameters"]
    embeddings = results[variants[-1]][0]["embedding_parameters"]
    print()
    print(
        f"student {args.student} ({parameters / 1e6:.0f}M parameters, {embeddings / 1e6:.0f}M of them "
        f"the embedding matrix), SVAMP dss, {args.batch_size} "
        f"examples/step, {args.steps} timed steps after one warm-up step, {args.repeats} repeats (medians)"
    )
    base = statistics.median(r["tokens_per_second"] for r in results[variants[0]])
    summary = {}
    for name in variants:
        rows = results[name]
        speed = statistics.median(r["tokens_per_second"] for r in rows)
        fraction = statistics.median(r["fraction_of_peak"] for r in rows)
        fraction_body = statistics.median(r["fraction_of_peak_body"] for r in rows)
        summary[name] = {
            "tokens_per_second": speed,
            "ratio": speed / base,
            "fraction_of_peak": fraction,
            "fraction_of_peak_body": fraction_body,
            "peak_gflops": statistics.median(r["peak_gflops"] for r in rows),
        }
        print(
            f"{name:<12} {speed:7.1f} tokens/s  {speed / base:4.2f}x {variants[0]}  "
            f"{100 * fraction:3.0f}% of its precision's matmul peak (6·N·tokens; "
            f"{100 * fraction_body:.0f}% without the embeddings)  "
            f"warm-up {statistics.median(r['warmup_seconds'] for r in rows):5.1f} s  "
            f"peak RSS {max(r['peak_rss_mb'] for r in rows):.0f} MB"
        )
    for name in variants:
        print(
            f"loss per step, {name}: " + ", ".join(f"{x:.3f}" for x in results[name][0]["losses"])
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
