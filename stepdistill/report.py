"""Report: read only a sweep's results file; write a markdown report with tables and plots.

Tables: per task, mean ± standard error over seeds for each mode and training fraction.
Then each of the paper's claims as a difference paired by seed (DSS − standard, DSS −
single-task, DSS − distillation with teacher labels) and the least data with which DSS
matches standard fine-tuning on all of it. Plots (PNG): accuracy vs training-data
fraction, DSS against standard fine-tuning and against standard distillation (the
paper's Figures 4 and 5), and a mode ablation bar chart at the largest fraction (its
Table 2), with the teacher's accuracy as a line.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .io import atomic_write_text
from .modes import variant as mode_variant
from .results import first_of_each_run, read_results

MODE_NAMES = {
    "standard": "standard fine-tuning (gold)",
    "distill": "standard distillation (teacher labels)",
    "dss": "distilling step-by-step",
    "dss-teacher": "distilling step-by-step (teacher labels)",
    "single": "single-task (rationale + label)",
    "single-teacher": "single-task (teacher labels)",
}


def variant(row: dict[str, Any]) -> str:
    """Mode, with the label source where it changes what the mode means."""
    return mode_variant(row["mode"], row.get("label_source", "gold"))


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, se


def cell_text(cell: dict[str, Any] | None) -> str:
    """``mean ± se (n=k)``; one seed has no standard error, so none is shown."""
    if cell is None:
        return ""
    if cell["n"] < 2:
        return f"{cell['mean']:.1f} (n=1)"
    return f"{cell['mean']:.1f} ± {cell['se']:.1f} (n={cell['n']})"


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[tuple[str, float], dict[str, Any]]]:
    """task -> (variant, fraction) -> {mean, se, n} of test accuracy (in %)."""
    groups: dict[str, dict[tuple[str, float], list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.get("test_accuracy") is None:
            continue
        groups[row["task"]][(variant(row), float(row["train_fraction"]))].append(
            100 * float(row["test_accuracy"])
        )
    result: dict[str, dict[tuple[str, float], dict[str, Any]]] = {}
    for task, cells in groups.items():
        result[task] = {}
        for key, values in cells.items():
            mean, se = mean_se(values)
            result[task][key] = {"mean": mean, "se": se, "n": len(values)}
    return result


PRECISION = {True: "bf16", False: "fp32"}

COMPARISONS = (
    ("dss", "standard"),
    ("dss", "single"),
    ("dss-teacher", "distill"),
    ("distill", "standard"),
    ("dss-teacher", "dss"),
)
"""The paper's claims as pairs: DSS against standard fine-tuning, against single-task
training, and (teacher labels only) against standard distillation; then what training on
the teacher's labels instead of gold ones costs standard training and DSS."""


def paired_differences(
    rows: list[dict[str, Any]], task: str, better: str, baseline: str
) -> dict[float, dict[str, Any]]:
    """fraction -> A − B test accuracy (points), paired by seed: mean, se, n, wins."""
    runs: dict[tuple[str, float, int], float] = {}
    for row in rows:
        if row["task"] == task and row.get("test_accuracy") is not None:
            runs[(variant(row), float(row["train_fraction"]), int(row["seed"]))] = 100 * float(
                row["test_accuracy"]
            )
    result: dict[float, dict[str, Any]] = {}
    for fraction in sorted({f for _, f, _ in runs}):
        seeds = sorted(
            s
            for name, f, s in runs
            if name == better and f == fraction and (baseline, f, s) in runs
        )
        if not seeds:
            continue
        differences = [runs[(better, fraction, s)] - runs[(baseline, fraction, s)] for s in seeds]
        mean, se = mean_se(differences)
        result[fraction] = {
            "mean": mean,
            "se": se,
            "n": len(seeds),
            "wins": sum(d > 0 for d in differences),
        }
    return result


def comparison_lines(
    rows: list[dict[str, Any]], task: str, cells: dict[tuple[str, float], dict[str, Any]]
) -> list[str]:
    """Markdown: each claim's paired difference, and the data needed to match standard
    fine-tuning on all the data."""
    lines: list[str] = []
    for better, baseline in COMPARISONS:
        for fraction, d in paired_differences(rows, task, better, baseline).items():
            spread = f" ± {d['se']:.1f}" if d["n"] > 1 else ""
            lines.append(
                f"| {MODE_NAMES[better]} − {MODE_NAMES[baseline]} | {100 * fraction:g}% | {d['mean']:+.1f}{spread} "
                f"| {d['wins']} of {d['n']} |"
            )
    if lines:
        lines = [
            "Paired by seed (same seed, same data): difference in test accuracy, points; mean ± standard "
            "error over seeds, and in how many seeds the first was higher.",
            "",
            "| comparison | data | difference | first higher |",
            "|---|---|---|---|",
            *lines,
            "",
        ]
    fractions = sorted({f for _, f in cells})
    if fractions and ("standard", fractions[-1]) in cells and len(fractions) > 1:
        target = cells[("standard", fractions[-1])]["mean"]
        enough = [
            f for f in fractions if ("dss", f) in cells and cells[("dss", f)]["mean"] >= target
        ]
        found = (
            f"with {100 * enough[0]:g}% of the data" if enough else "at none of the fractions run"
        )
        lines += [
            f"Standard fine-tuning on {100 * fractions[-1]:g}% of the data: {target:.1f}%. "
            f"Distilling step-by-step matches or beats that mean {found}.",
            "",
        ]
    return lines


def percent(value: Any) -> str:
    """An accuracy in [0, 1] as a percentage with one decimal ("" when missing)."""
    return f"{100 * float(value):.1f}" if value is not None else ""


def teacher_line(rows: list[dict[str, Any]], task: str) -> float | None:
    values = [
        r["teacher_test_accuracy"]
        for r in rows
        if r["task"] == task and r.get("teacher_test_accuracy") is not None
    ]
    return 100 * statistics.fmean(values) if values else None


def report(results: str | Path, output: str | Path | None = None) -> Path:
    """Write ``report.md`` and PNG plots next to the results file (or into ``output``)."""
    rows = first_of_each_run(read_results(results), results)
    if not rows:
        raise ValueError(f"{results}: no results to report")
    output = Path(output) if output else Path(results).parent / "report"
    output.mkdir(parents=True, exist_ok=True)
    table = aggregate(rows)
    lines = [
        "# Results",
        "",
        f"From `{results}` ({len(rows)} runs). Test accuracy (%), mean ± standard error over seeds (n = seeds).",
        "A run's data is its share of the training split, capped by `train_limit` where the sweep sets "
        "one; the last table gives each run's number of training examples.",
        "",
    ]
    for task, cells in sorted(table.items()):
        fractions = sorted({fraction for _, fraction in cells})
        variants = sorted(
            {name for name, _ in cells},
            key=lambda v: list(MODE_NAMES).index(v) if v in MODE_NAMES else 99,
        )
        lines += [f"## {task}", ""]
        teacher = teacher_line(rows, task)
        if teacher is not None:
            lines += [f"Teacher (few-shot CoT) test accuracy: {teacher:.1f}%", ""]
        lines.append("| mode | " + " | ".join(f"{100 * f:g}% data" for f in fractions) + " |")
        lines.append("|---|" + "---|" * len(fractions))
        for name in variants:
            cells_text = []
            for fraction in fractions:
                cell = cells.get((name, fraction))
                cells_text.append(cell_text(cell))
            lines.append(f"| {MODE_NAMES.get(name, name)} | " + " | ".join(cells_text) + " |")
        lines.append("")
        lines += comparison_lines(rows, task, cells)
        for png in plot_task(task, cells, teacher, output):
            lines += [f"![{png.stem}]({png.name})", ""]
    lines += [
        "## Every run",
        "",
        "| run | train examples | valid % | test % | best step / steps | minutes | precision |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        minutes = (
            f"{float(row['wall_seconds']) / 60:.1f}" if row.get("wall_seconds") is not None else ""
        )
        lines.append(
            f"| {row.get('run_id', '')} | {row.get('train_examples', '')} "
            f"| {percent(row.get('valid_accuracy'))} | {percent(row.get('test_accuracy'))} "
            f"| {row.get('best_step', '')} / {row.get('steps', '')} | {minutes} | {PRECISION.get(row.get('bf16'), '')} |"
        )
    lines.append("")
    path = output / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def plot_task(
    task: str, cells: dict[tuple[str, float], dict[str, Any]], teacher: float | None, output: Path
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    fractions = sorted({fraction for _, fraction in cells})
    for baseline in ("standard", "distill"):
        if (
            len(fractions) < 2
            or not any(name == baseline for name, _ in cells)
            or not any(name.startswith("dss") for name, _ in cells)
        ):
            continue
        figure, axis = plt.subplots(figsize=(6, 4))
        names = ["dss", baseline] if baseline == "standard" else ["dss-teacher", "dss", baseline]
        for index, name in enumerate(names):
            points = [(f, cells[(name, f)]) for f in fractions if (name, f) in cells]
            if not points:
                continue
            # each series a little to the side, so that equal means do not hide each other
            dodge = 2 ** (0.06 * (index - (len(names) - 1) / 2))
            axis.errorbar(
                [100 * f * dodge for f, _ in points],
                [c["mean"] for _, c in points],
                yerr=[c["se"] for _, c in points],
                marker="o",
                capsize=4,
                label=MODE_NAMES.get(name, name),
            )
        if teacher is not None:
            axis.axhline(teacher, color="gray", linestyle="--", label="teacher (few-shot CoT)")
        axis.set_xscale("log", base=2)
        axis.set_xticks([100 * f for f in fractions], [f"{100 * f:g}%" for f in fractions])
        axis.set_xlabel("training data used (% of the training split)")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(
            f"{task}: distilling step-by-step vs {MODE_NAMES[baseline].split(' (')[0]}", fontsize=10
        )
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        figure.tight_layout()
        path = output / f"{task}-dss-vs-{baseline}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    largest = max(fractions)
    bars = [(name, cells[(name, largest)]) for name in MODE_NAMES if (name, largest) in cells]
    if bars:
        figure, axis = plt.subplots(figsize=(7, 4))
        positions = range(len(bars))
        axis.bar(
            positions,
            [c["mean"] for _, c in bars],
            yerr=[c["se"] for _, c in bars],
            capsize=5,
            color="tab:blue",
            alpha=0.8,
        )
        axis.set_xticks(
            list(positions), [MODE_NAMES[name].replace(" (", "\n(") for name, _ in bars], fontsize=7
        )
        if teacher is not None:
            axis.axhline(teacher, color="gray", linestyle="--", label="teacher (few-shot CoT)")
            axis.legend(fontsize=8)
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"{task}: training modes at {100 * largest:g}% of the data", fontsize=10)
        axis.grid(axis="y", alpha=0.3)
        figure.tight_layout()
        path = output / f"{task}-modes.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    return written
