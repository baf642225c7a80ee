"""Inference speed of a student: label only, one at a time, with a rationale, and by scoring.

For each task (default SVAMP and CQA, test split, the first ``--limit`` examples) it
times, on the same examples and the same loaded model:

- label, batched: ``Student.predict`` as the library runs it: ``[label]`` prompt,
  batched greedy decoding by similar length, KV cache, stop at the end of the label,
  bf16 weights;
- label, batch 1: the same, one example per ``generate`` call;
- rationale + label, batched: ``Student.predict(..., rationale=True)``: the label and
  the full rationale (``[rationale]`` prompt, up to the run's ``max_rationale_tokens``),
  what a user asking for an explanation gets; and the same one at a time on the first
  ``--single-rationale`` examples (default 8: it is the slowest row);
- scoring, batched (closed label sets only: CQA's five choices, the NLI labels):
  ``Student.choose``: each candidate's log-likelihood after the ``[label]`` prompt,
  all candidates of an example in one forward pass (``stepdistill/candidates.py``);
- with ``--ctranslate2``, label-only by CTranslate2 (an optional dependency: ``pip install
  ctranslate2``) on the same weights and prompts, float32 and int8, batched and one at a
  time;
- with ``--int8-rows``, label-only again with int8 weights (``Student.load(int8=True)``),
  batched and one at a time, last (the weights are replaced in place);
- with ``--autocast-rows``, label-only again with fp32 weights under bf16 autocast
  (how ``Student`` ran before it cast its weights to bf16).

and prints examples/s, the ratios against the rationale and batch-1 baselines measured
in the same run, the tokens written per example, the wall time per written token of the
one-at-a-time methods against the memory-bandwidth bound measured in the same run (every
weight read once a token), the accuracy of each method and the machine. A warm-up call on two examples precedes the timings; each method is timed
once.

    nice -n 19 .venv/bin/python benchmarks/inference.py --run-dir svamp=runs/svamp-dss-...
    nice -n 19 .venv/bin/python benchmarks/inference.py --tasks cqa --limit 32

``--run-dir [TASK=]RUN`` (repeatable) gives a task its trained student (the model in
``RUN/model``); a task without one uses ``--student`` (default the built-in base
``smollm2-135m``, untrained on the task: its accuracy is then meaningless and is
labelled so, and its labels and rationales are not as long as a trained student's).
``--limit`` defaults to 64 examples per task; the default invocation (two tasks) took
under 4 minutes on a 2-core CPU, most of it in batch-1 and rationale decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

DEFAULT_TASKS = "svamp,cqa"


def machine() -> dict[str, Any]:
    import torch
    import transformers

    from stepdistill.device import NATIVE_BF16_FLAGS, x86_cpu_flags

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    except OSError:  # not Linux: platform.processor() is what there is
        pass
    flags = x86_cpu_flags() or frozenset()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "bf16_isa": sorted(flags & (NATIVE_BF16_FLAGS | {"amx_tile"})),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def run_dirs(values: list[str]) -> dict[str, Path]:
    """``TASK=PATH`` or a bare run folder (its task read from its config)."""
    from stepdistill.run_folder import load_run

    found: dict[str, Path] = {}
    for value in values:
        if "=" in value:
            task, path = value.split("=", 1)
        else:
            path, task = value, load_run(value).config.task
        found[task] = Path(path)
    return found


def load(
    task_name: str, run_dir: Path | None, student_name: str, bf16: bool, batch_size: int
) -> tuple[Any, list[Any], str]:
    """(student, test examples, description) for one task."""
    from stepdistill.data import load_splits
    from stepdistill.models import load_student
    from stepdistill.run_folder import load_run
    from stepdistill.student import Student
    from stepdistill.tasks import load_task

    if run_dir is not None:
        run = load_run(run_dir)
        student = Student.load(run_dir, bf16=bf16, batch_size=batch_size)
        examples = load_splits(run.task, run.config.data_dir)["test"]
        return student, examples, f"trained run {run_dir} ({run.config.student}, {run.config.mode})"
    task = load_task(task_name)
    model, tokenizer = load_student(student_name)
    # The run-less student gets the library's defaults (256 input, 128 rationale tokens).
    student = Student(
        model,
        tokenizer,
        task,
        name=student_name,
        mode="dss",
        is_run=True,
        batch_size=batch_size,
        bf16=bf16,
    )
    return (
        student,
        load_splits(task)["test"],
        f"UNTRAINED base student {student_name}: accuracy meaningless",
    )


def timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def generated_tokens(student: Any, predictions: list[Any]) -> float:
    """Mean tokens written per example (labels, rationales, each + its end token),
    counted by re-encoding the decoded text: close to, not exactly, what was decoded."""
    total = 0
    for p in predictions:
        total += student.count_tokens(p.raw) + 1
        if p.rationale is not None:
            total += student.count_tokens(p.rationale) + 1
    return total / max(1, len(predictions))


def ctranslate2_labels(student: Any, run_dir: Path, compute_type: str) -> Any:
    """Label-only generation by CTranslate2 (``pip install ctranslate2``, an optional
    benchmark dependency) on the same weights: the run's model converted once (float32,
    quantised at load for int8), the same ``[label]`` prompt tokens, greedy decoding to
    the end token within the same label budget, decoded and normalised as the library
    does. Returns ``call(texts, batch) -> predictions``."""
    import tempfile
    from types import SimpleNamespace

    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    from stepdistill.encode import encode_prompt
    from stepdistill.inference import normal_label
    from stepdistill.modes import LABEL_PREFIX

    folder = Path(tempfile.gettempdir()) / f"stepdistill-ct2-{Path(run_dir).resolve().name}"
    if not (folder / "model.bin").is_file():
        TransformersConverter(str(Path(run_dir) / "model")).convert(str(folder), force=True)
    generator = ctranslate2.Generator(
        str(folder), device="cpu", compute_type=compute_type, intra_threads=os.cpu_count() or 1
    )
    tokenizer, mode = student.tokenizer, student.mode_spec
    budget = mode.label_budget(student.task.max_label_tokens, student.max_rationale_tokens)
    layout = mode.layout

    def call(texts: list[str], batch: int) -> list[Any]:
        prompts = [
            tokenizer.convert_ids_to_tokens(
                encode_prompt(tokenizer, LABEL_PREFIX, text, student.max_input_tokens, False)
            )
            for text in texts
        ]
        out = []
        for start in range(0, len(prompts), batch):
            results = generator.generate_batch(
                prompts[start : start + batch],
                max_length=budget,
                sampling_topk=1,
                include_prompt_in_result=False,
                end_token=tokenizer.eos_token,
            )
            for result in results:
                raw = tokenizer.decode(result.sequences_ids[0], skip_special_tokens=True)
                out.append(
                    SimpleNamespace(
                        label=normal_label(student.task, layout.label_of(raw)),
                        raw=raw,
                        rationale=None,
                    )
                )
        return out

    return call


def bench_task(task_name: str, run_dir: Path | None, args: argparse.Namespace) -> dict[str, Any]:
    from stepdistill.data import DataError
    from stepdistill.metrics import is_correct

    student, examples, described = load(
        task_name, run_dir, args.student, args.bf16, args.batch_size
    )
    examples = [e for e in examples if e.label is not None][: args.limit]
    texts = [e.input for e in examples]
    try:
        candidates = [student.candidates(e.record) for e in examples]
    except DataError:
        candidates = None  # free-text labels (SVAMP's equations): nothing to score
    student.predict(texts[:2])  # warm-up: first-call allocations and kernel choices
    if candidates:
        student.choose(texts[:2], candidates[:2])
    batch_size = student.batch_size
    rows: dict[str, dict[str, Any]] = {}

    def run(name: str, batch: int, count: int, call: Any, writes: bool = True) -> None:
        student.batch_size = batch
        started = time.perf_counter()
        predictions = call(texts[:count])
        seconds = time.perf_counter() - started
        student.batch_size = batch_size
        correct = sum(
            is_correct(student.task, p.label, e.label)
            for p, e in zip(predictions, examples, strict=False)
        )
        tokens = generated_tokens(student, predictions) if writes else None
        rows[name] = {
            "batch": batch,
            "examples": count,
            "seconds": seconds,
            "examples_per_second": count / seconds,
            "accuracy": correct / count,
            "tokens_per_example": tokens,
            # one at a time: the wall time of each written token (its prompt's prefill
            # included), against the bandwidth bound below
            "ms_per_token": 1000 * seconds / (count * tokens) if batch == 1 and tokens else None,
        }
        print(
            f"  {name:<40} {count:4d} examples {seconds:7.1f} s  {count / seconds:7.2f} examples/s",
            flush=True,
        )

    print(f"{task_name}: {described}", flush=True)
    bound = bandwidth_bound(student.model)
    print(
        f"  weights {bound['bf16_mb']:.0f} MB bf16 / {bound['int8_mb']:.0f} MB int8, read "
        f"bandwidth {bound['gb_per_s']:.1f} GB/s: batch-1 bound {bound['bf16_ms']:.1f} / "
        f"{bound['int8_ms']:.1f} ms a token",
        flush=True,
    )
    n = len(examples)
    run("label", batch_size, n, student.predict)
    if candidates:
        run(
            f"scoring ({args.reduce})",
            batch_size,
            n,
            lambda t: student.choose(t, candidates[: len(t)], reduce=args.reduce),
            writes=False,
        )
    run("label, batch 1", 1, n, student.predict)
    run("rationale + label", batch_size, n, lambda t: student.predict(t, rationale=True))
    if args.single_rationale:
        run(
            "rationale + label, batch 1",
            1,
            min(n, args.single_rationale),
            lambda t: student.predict(t, rationale=True),
        )
    if args.autocast_rows and student.bf16:
        import torch

        from stepdistill.student import cast_parameters

        # The library before bf16 weights: fp32 weights under bf16 autocast.
        cast_parameters(student.model, torch.float32)
        student.predict(texts[:2])
        run("label, fp32 weights + autocast", batch_size, n, student.predict)
        run("label, batch 1, fp32 weights + autocast", 1, n, student.predict)
        cast_parameters(student.model, torch.bfloat16)
    if args.int8_rows and student.bf16:
        from stepdistill.inference import int8_weights

        # Student.load(..., int8=True): int8 weights, one scale per row, bf16 activations.
        int8_weights(student.model)
        student.predict(texts[:2])
        run("label, int8 weights", batch_size, n, student.predict)
        run("label, batch 1, int8 weights", 1, n, student.predict)
    if args.ctranslate2 and run_dir is not None:
        for compute_type in ("float32", "int8"):
            generate_ct2 = ctranslate2_labels(student, run_dir, compute_type)
            generate_ct2(texts[:2], 2)  # warm-up
            run(
                f"label, CTranslate2 {compute_type}",
                batch_size,
                n,
                lambda t, g=generate_ct2: g(t, batch_size),
            )
            run(
                f"label, batch 1, CTranslate2 {compute_type}",
                1,
                n,
                lambda t, g=generate_ct2: g(t, 1),
            )
    return {
        "task": task_name,
        "student": described,
        "untrained": run_dir is None,
        "max_rationale_tokens": student.max_rationale_tokens,
        "max_label_tokens": student.task.max_label_tokens,
        "methods": rows,
        "bandwidth_bound": bound,
    }


def bandwidth_bound(model: Any) -> dict[str, float]:
    """The memory-bandwidth bound of decoding one token at batch 1: every weight matrix
    read once (bf16: 2 bytes a weight; int8 weights: 1), at the read bandwidth measured
    now (``decode_probe.bandwidth_gbs``)."""
    from decode_probe import bandwidth_gbs

    weights = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    gb_per_s = bandwidth_gbs()
    return {
        "bf16_mb": 2 * weights / 1e6,
        "int8_mb": weights / 1e6,
        "gb_per_s": gb_per_s,
        "bf16_ms": 1000 * 2 * weights / (gb_per_s * 1e9),
        "int8_ms": 1000 * weights / (gb_per_s * 1e9),
    }


def table(result: dict[str, Any]) -> str:
    methods = result["methods"]
    rationale = methods["rationale + label"]["examples_per_second"]
    single = methods["label, batch 1"]["examples_per_second"]
    accuracy_head = "accuracy (untrained: meaningless)" if result["untrained"] else "accuracy"
    lines = [
        f"{result['task']}: {result['student']} (label budget {result['max_label_tokens']}, "
        f"rationale budget {result['max_rationale_tokens']} tokens)",
        "",
        f"| method | batch | examples | examples/s | × rationale + label | × label batch 1 | tokens written / example | ms / token (batch 1) | {accuracy_head} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in methods.items():
        speed = row["examples_per_second"]
        tokens = "—" if row["tokens_per_example"] is None else f"{row['tokens_per_example']:.1f}"
        latency = "—" if row.get("ms_per_token") is None else f"{row['ms_per_token']:.1f}"
        lines.append(
            f"| {name} | {row['batch']} | {row['examples']} | {speed:.2f} | {speed / rationale:.1f}× | {speed / single:.1f}× | "
            f"{tokens} | {latency} | {100 * row['accuracy']:.1f}% |"
        )
    bound = result["bandwidth_bound"]
    lines += [
        "",
        f"memory-bandwidth bound at batch 1: {bound['bf16_ms']:.1f} ms a token for bf16 weights, "
        f"{bound['int8_ms']:.1f} for int8 ({bound['bf16_mb']:.0f} / {bound['int8_mb']:.0f} MB "
        f"read at the {bound['gb_per_s']:.1f} GB/s measured in this run)",
    ]
    if "rationale + label, batch 1" in methods:
        ratio = single / methods["rationale + label, batch 1"]["examples_per_second"]
        lines += ["", f"one at a time: label {ratio:.1f}× faster than rationale + label"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks",
        default=DEFAULT_TASKS,
        help=f"comma-separated task names (default {DEFAULT_TASKS})",
    )
    parser.add_argument(
        "--run-dir",
        action="append",
        default=[],
        metavar="[TASK=]RUN",
        help="a trained run folder for a task (repeatable); its model is RUN/model",
    )
    parser.add_argument(
        "--student",
        default="smollm2-135m",
        help="student for tasks without --run-dir (untrained: accuracy meaningless)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=64,
        help="test examples per task, the same for every method (default 64)",
    )
    parser.add_argument(
        "--single-rationale",
        type=int,
        default=8,
        metavar="N",
        help="also time rationale + label one at a time on the first N examples (default 8; 0: skip)",
    )
    parser.add_argument(
        "--ctranslate2",
        action="store_true",
        help="also label-only by CTranslate2 (float32 and int8) on the same weights "
        "(pip install ctranslate2; trained runs only)",
    )
    parser.add_argument(
        "--int8-rows", action="store_true", help="also label-only with int8 weights, last"
    )
    parser.add_argument(
        "--autocast-rows",
        action="store_true",
        help="also time label-only with fp32 weights under bf16 autocast (the library before bf16 weights)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="batch size of the batched methods (default 32)"
    )
    parser.add_argument(
        "--no-bf16", dest="bf16", action="store_false", help="fp32 compute (default: bf16)"
    )
    parser.add_argument(
        "--reduce",
        choices=("sum", "mean"),
        default="sum",
        help="candidate score: sum or mean token log-prob",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the results to this JSON file"
    )
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    runs = run_dirs(args.run_dir)
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, bf16 ISA {info['bf16_isa'] or 'none'}; torch {info['torch']}, "
        f"transformers {info['transformers']}, {info['threads']} threads; bf16 {'on' if args.bf16 else 'off'}",
        flush=True,
    )
    started = time.perf_counter()
    results = [bench_task(name, runs.get(name), args) for name in args.tasks.split(",")]
    print()
    for result in results:
        print(table(result))
        print()
    print(f"total {time.perf_counter() - started:.0f} s")
    report = {
        "machine": info,
        "bf16": args.bf16,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
