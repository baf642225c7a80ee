"""How good the teacher's labels are on the training data of the unlabeled-setting runs
(``label_source: teacher``, and ``distill``): for each such run of the given sweeps, its
training subsample, how many examples have no teacher label (an unparseable teacher
output: ``train`` skips them), and how many of the labels it does give disagree with the
gold label. Builds each run's training set as ``tokens.py`` does, exactly as ``train``
does less any extra unlabeled inputs (``extra_annotations``: no gold label to check
against). Usage:

    python benchmarks/paper/teacher_labels.py benchmarks/paper/*.yaml
"""

from __future__ import annotations

import argparse


def label_counts(config) -> tuple[int, int, int, int]:
    """(subsample size, without a teacher label, trained on, teacher label wrong)."""
    from tokens import training_set  # the sibling script: the training set as train builds it

    from stepdistill.metrics import is_correct

    task, pool, items, skipped = training_set(config)
    wrong = sum(not is_correct(task, item.label, item.example.label) for item in items)
    return len(pool), skipped["no_label"], len(items), wrong


def main() -> None:
    from stepdistill.sweep import expand, load_sweep
    from stepdistill.training_data import uses_teacher_labels

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+")
    args = parser.parse_args()
    print(
        "| task | data | seed | subsample | no teacher label | trained on | teacher wrong "
        "| teacher right, % of subsample |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    seen: set[tuple] = set()
    for path in args.sweeps:
        for config in expand(load_sweep(path)):
            key = (config.task, config.teacher, config.annotations, config.data_dir)
            key += (config.train_fraction, config.train_limit, config.seed)
            if not uses_teacher_labels(config) or key in seen:
                continue  # modes sharing a subsample share its teacher labels
            seen.add(key)
            size, missing, kept, wrong = label_counts(config)
            share = f"{config.train_fraction:.1%}".replace(".0%", "%")
            if config.train_limit:
                share += f" (≤ {config.train_limit})"
            print(
                f"| {config.task} | {share} | {config.seed} | {size} | {missing} | {kept} "
                f"| {wrong} | {100 * (kept - wrong) / size:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
