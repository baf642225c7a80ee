"""Training tokens per run of the paper sweeps, and the training hours they take at a
given speed: the basis for the time estimates in benchmarks/paper/README.md. It builds
each run's training set exactly as ``train`` does (same subsample, same skips, same
encoding), one seed per grid point (seeds differ in order, not size). Usage:

    python benchmarks/paper/tokens.py benchmarks/paper/*.yaml [--tokens-per-second 130]

Evaluation (validation after each epoch, the test set once) is not included. The last
line sums the runs not yet in their sweep's results file: the training still to do.
"""

from __future__ import annotations

import argparse
import functools
from collections import Counter


@functools.cache
def tokenizer_of(student: str):
    from stepdistill.models import load_student

    return load_student(student)[1]  # the tokenizer exactly as training sets it up


def training_set(config):
    """(task, subsample, training examples, skip counts) of the run ``config`` describes,
    built by the functions ``train`` uses (less any extra unlabeled inputs)."""
    from stepdistill.data import load_splits
    from stepdistill.run import ensure_annotations
    from stepdistill.tasks import load_task
    from stepdistill.training_data import training_annotations, training_examples, training_pool

    task = load_task(config.task)
    ensure_annotations(config, task)  # as `sweep` does: the teacher's rationales, once
    pool = training_pool(config, load_splits(task, config.data_dir)["train"])
    items, skipped = training_examples(config, pool, training_annotations(config, task), task)
    return task, pool, items, skipped


def training_tokens(config) -> tuple[int, int]:
    """(examples, prompt + target tokens in one epoch) of the run ``config`` describes."""
    from stepdistill.packing import row_length
    from stepdistill.training_data import encode_example

    items = training_set(config)[2]
    tokenizer = tokenizer_of(config.student)
    encoded = [encode_example(tokenizer, config, item, False) for item in items]
    return len(items), sum(row_length(row, False) for rows in encoded for row in rows)


def point_of(config) -> str:
    """A run's grid point: its name without its seed."""
    return config.run_name.removesuffix(f"-s{config.seed}")


def main() -> None:
    from pathlib import Path

    from stepdistill.sweep import expand, load_sweep, recorded_runs

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+")
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=130.0,
        help="training speed (each run's metrics.json has its own; fp32 SVAMP runs on the "
        "2-core machine: 113-137)",
    )
    args = parser.parse_args()
    print("| sweep | run (first seed) | examples | tokens / epoch | epochs | training hours |")
    print("|---|---|---:|---:|---:|---:|")
    total = left = 0.0
    for path in args.sweeps:
        spec = load_sweep(path)
        configs = expand(spec)
        seeds = Counter(point_of(config) for config in configs)  # a point's seeds
        done = recorded_runs(Path(spec["output_dir"]) / "results.jsonl")
        hours: dict[str, float] = {}  # per grid point; its seeds differ in order, not size
        for config in configs:
            point = point_of(config)
            if point not in hours:  # the point's first seed: count its tokens once
                examples, tokens = training_tokens(config)
                hours[point] = tokens * config.epochs / args.tokens_per_second / 3600
                print(
                    f"| {spec.get('name', path)} | {config.run_name} | {examples} | {tokens} "
                    f"| {config.epochs:g} | {hours[point]:.2f} (× {seeds[point]} seeds) |",
                    flush=True,
                )
            total += hours[point]
            left += 0.0 if config.run_name in done else hours[point]
    print(f"\nall seeds: {total:.1f} h of training at {args.tokens_per_second:g} tokens/s")
    print(f"not yet in the results files: {left:.1f} h")


if __name__ == "__main__":
    main()
