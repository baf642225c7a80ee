"""Deployment parity and speed: one trained run, answered by our Student and by llama.cpp
on GGUF exports of the same checkpoint (``stepdistill export --format gguf``), side by
side in one run.

For each engine it labels the run's test split (the first ``--limit`` examples) one at
a time (batch 1) and prints: the accuracy (the task's metric), the share of examples
whose greedy label equals our Student's, examples/s, the speed against our Student and
the size of the weights file. Rows:

- Student: ``Student.predict`` at batch 1, the run's own precision (bf16 weights when
  the run trained in bf16; what its recorded test accuracy used), the reference;
- Student fp32 (``--fp32``): the same on the fp32 weights the run folder holds;
- llama.cpp <quant> for each of ``--quants`` (default f16,bf16,q8_0,q4_k_m): the GGUF
  file exported from the run, prompted with the Student's own token ids
  (``stepdistill/gguf_engine.py``);
- llama.cpp <quant>, text prompt (``--text-prompt QUANT``, default f16): the Ollama
  route: the Modelfile's TEMPLATE rendered for the input and tokenized by llama.cpp
  (the prefix and the input tokenized together, where training tokenized them apart).

    nice -n 19 .venv/bin/python benchmarks/deploy.py --run-dir runs/svamp-standard

A warm-up call on two examples precedes each timing; each engine is timed once, on the
threads given (``--threads``, default 2, for both engines).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(function: Any, texts: list[str]) -> tuple[list[str | None], float]:
    """Labels of ``texts`` and the seconds they took, after a warm-up on two of them."""
    function(texts[:2])
    start = time.perf_counter()
    labels = function(texts)
    return labels, time.perf_counter() - start


def text_prompt_labels(engine: Any, modelfile: str, texts: list[str]) -> list[str | None]:
    """The Ollama route: the rendered TEMPLATE, tokenized as one string by llama.cpp (with
    the BOS token where the GGUF says to add one)."""
    from stepdistill.gguf_export import render_template
    from stepdistill.inference import normal_label

    labels = []
    for text in texts:
        rendered = render_template(modelfile, text)
        add_bos = bool(getattr(engine.tokenizer, "add_bos_token", False))
        ids = engine.llama.tokenize(rendered.encode("utf-8"), add_bos=add_bos, special=True)
        raw = engine.complete(ids)
        labels.append(normal_label(engine.task, engine.mode.layout.label_of(raw)))
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", required=True, help="a trained run (llama architecture)")
    parser.add_argument("--limit", type=int, help="first N test examples (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quants", default="f16,bf16,q8_0,q4_k_m")
    parser.add_argument(
        "--text-prompt", default="f16", help="quant of the Ollama-route row ('' for none)"
    )
    parser.add_argument("--fp32", action="store_true", help="also time the Student on fp32 weights")
    parser.add_argument("--work", help="folder for the GGUF exports (default: a temporary one)")
    parser.add_argument("--output", help="also write the rows as JSON here")
    args = parser.parse_args()

    import torch

    from stepdistill.data import load_splits
    from stepdistill.gguf_engine import GGUFStudent
    from stepdistill.gguf_export import export_gguf
    from stepdistill.metrics import accuracy
    from stepdistill.run_folder import load_run
    from stepdistill.student import Student

    torch.set_num_threads(args.threads)
    run = load_run(args.run_dir)
    examples = load_splits(run.task, run.config.data_dir)["test"][: args.limit]
    texts = [example.input for example in examples]
    gold = [example.label for example in examples]
    rows: list[dict[str, Any]] = []

    def add(engine: str, weights: str, size: int, labels: list[str | None], seconds: float) -> None:
        reference = rows[0]["labels"] if rows else labels
        rows.append(
            {
                "engine": engine,
                "weights": weights,
                "bytes": size,
                "accuracy": accuracy(run.task, labels, gold),
                "agreement": sum(a == b for a, b in zip(labels, reference, strict=True))
                / len(labels),
                "examples_per_s": len(labels) / seconds,
                "labels": labels,
            }
        )
        row = rows[-1]
        print(
            f"{engine:<28} {weights:<8} acc {row['accuracy']:.3f} agree {row['agreement']:.3f} "
            f"{row['examples_per_s']:.2f} ex/s",
            flush=True,
        )
        if args.output:  # after every row: a cut-short run keeps what it measured
            Path(args.output).write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2))

    model_bytes = sum(
        f.stat().st_size for f in (Path(args.run_dir) / "model").glob("*.safetensors")
    )
    student = Student.load(args.run_dir, batch_size=1, threads=args.threads)
    precision = "bf16" if student.bf16 else "fp32"
    labels, seconds = timed(lambda t, s=student: [p.label for p in s.predict(t)], texts)
    add("Student (PyTorch)", precision, model_bytes // (2 if student.bf16 else 1), labels, seconds)
    if args.fp32 and student.bf16:
        fp32 = Student.load(args.run_dir, batch_size=1, threads=args.threads, bf16=False)
        labels, seconds = timed(lambda t, s=fp32: [p.label for p in s.predict(t)], texts)
        add("Student (PyTorch)", "fp32", model_bytes, labels, seconds)
        del fp32
    del student

    work = Path(args.work or tempfile.mkdtemp(prefix="deploy-"))
    for quant in [q for q in args.quants.split(",") if q]:
        folder = work / quant
        if not folder.is_dir():
            export_gguf(args.run_dir, folder, quant=quant)
        file = next(folder.glob("*.gguf"))
        engine = GGUFStudent.load(args.run_dir, file, threads=args.threads)
        labels, seconds = timed(lambda t, e=engine: [p.label for p in e.predict(t)], texts)
        add("llama.cpp (token ids)", quant, file.stat().st_size, labels, seconds)
        if quant == args.text_prompt:
            modelfile = (folder / "Modelfile").read_text(encoding="utf-8")
            labels, seconds = timed(
                lambda t, e=engine, m=modelfile: text_prompt_labels(e, m, t), texts
            )
            add("llama.cpp (Ollama template)", quant, file.stat().st_size, labels, seconds)
        engine.close()

    base = rows[0]["examples_per_s"]
    print()
    print(
        f"{run.task.name} test, {len(texts)} examples, batch 1, {args.threads} threads, "
        f"{cpu_name()} ({os.cpu_count()} cores); run {Path(args.run_dir).name} "
        f"(recorded test accuracy: {json.loads((Path(args.run_dir) / 'metrics.json').read_text()).get('test_accuracy')})"
    )
    print()
    print(
        "| engine | weights | file | accuracy | labels = Student's | examples/s | speed vs Student |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['engine']} | {row['weights']} | {row['bytes'] / 2**20:.0f} MiB | "
            f"{row['accuracy']:.1%} | {row['agreement']:.1%} | {row['examples_per_s']:.2f} | "
            f"{row['examples_per_s'] / base:.2f}x |"
        )
    if args.output:
        Path(args.output).write_text(json.dumps({"cpu": cpu_name(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
