"""Report: read only a sweep's results file; write a markdown report with tables and plots.

Tables: per task, mean ± standard error over seeds for each mode and training fraction.
Then each of the paper's claims as a difference paired by seed (DSS − standard, DSS −
single-task, DSS − distillation with teacher labels) and the least data with which DSS
matches standard fine-tuning on all of it. Plots (PNG): accuracy vs training-data
fraction, DSS against standard fine-tuning and against standard distillation (the
paper's Figures 4 and 5), a mode ablation bar chart at the largest fraction (its
Table 2), with the teacher's accuracy as a line, and the paired differences.

Paired statistics: a results row carries its run's per-problem test correctness
(``test_correct``, with ``test_ids``, a digest of the problems' ids), so two runs of a
comparison are compared problem by problem without their run folders: a 95% confidence
interval from a paired bootstrap over seeds and, within each seed, problems, and the
exact McNemar p on the discordant problems pooled over seeds (``stats``); and, from the
per-seed differences alone, a Student-t interval and a sign test, the seed the unit that
varies. Rows without
that record (older sweeps), or runs tested on different problems, get the seed-paired
mean ± standard error and the seed-level statistics only, and the report says which. Rows that also carry the teacher's
correctness on the same problems (``teacher_test_correct``) compare each student with its
teacher the same way: the paper's claim that the small student outperforms the LLM.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from .io import atomic_write_text
from .modes import COMPARISONS, TITLES
from .modes import variant as mode_variant
from .results import first_of_each_run, read_results
from .stats import (
    RESAMPLES,
    discordant,
    mcnemar_exact,
    paired_bootstrap,
    seed_t_interval,
    sign_counts,
    sign_test,
)


def variant(row: dict[str, Any]) -> str:
    """Mode, with the label source where it changes what the mode means."""
    if row.get("recipe"):
        return str(row["recipe"])
    return mode_variant(
        row["mode"], row.get("label_source", "gold"), bool(row.get("rationale_filter"))
    )


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


CURVE_PLOTS = (
    ("standard", ("dss", "standard")),
    ("distill", ("dss-teacher", "dss", "distill")),
)
"""Accuracy against data size, one plot per baseline (the paper's Figures 4 and 5)."""

LESS_DATA_CLAIM = ("dss", "standard")
"""The paper's Figure 4 claim: DSS with less data matches standard fine-tuning on all."""


def paired_runs(
    rows: list[dict[str, Any]], task: str, better: str, baseline: str
) -> dict[float, list[tuple[int, dict[str, Any], dict[str, Any]]]]:
    """fraction -> (seed, A's row, B's row) for each seed on which both ran (with a test
    accuracy)."""
    runs: dict[tuple[str, float, int], dict[str, Any]] = {}
    for row in rows:
        if row["task"] == task and row.get("test_accuracy") is not None:
            runs[(variant(row), float(row["train_fraction"]), int(row["seed"]))] = row
    result: dict[float, list[tuple[int, dict[str, Any], dict[str, Any]]]] = {}
    for fraction in sorted({f for _, f, _ in runs}):
        seeds = sorted(
            s
            for name, f, s in runs
            if name == better and f == fraction and (baseline, f, s) in runs
        )
        if seeds:
            result[fraction] = [
                (s, runs[(better, fraction, s)], runs[(baseline, fraction, s)]) for s in seeds
            ]
    return result


GAPS = {
    "missing": "no per-problem data (a row written before rows recorded it)",
    "mismatched": "the two runs were tested on different problems",
}
"""Why a pair of runs is not compared problem by problem."""


def problem_counts(
    pairs: list[tuple[int, dict[str, Any], dict[str, Any]]],
) -> tuple[list[tuple[int, int, int]], dict[str, list[int]]]:
    """McNemar's (b, c, n) for each seed whose two runs carry per-problem records of the
    same test problems in the same order; the other seeds, by reason (``GAPS``)."""
    counts: list[tuple[int, int, int]] = []
    gaps: dict[str, list[int]] = {}
    for seed, first, second in pairs:
        if not first.get("test_correct") or not second.get("test_correct"):
            gaps.setdefault("missing", []).append(seed)
        elif first.get("test_ids") != second.get("test_ids") or len(first["test_correct"]) != len(
            second["test_correct"]
        ):
            gaps.setdefault("mismatched", []).append(seed)
        else:
            counts.append(discordant(first["test_correct"], second["test_correct"]))
    return counts, gaps


def paired_differences(
    rows: list[dict[str, Any]], task: str, better: str, baseline: str
) -> dict[float, dict[str, Any]]:
    """fraction -> A − B test accuracy (points), paired by seed: ``mean``, ``se``, ``n``
    (seeds), each side's ``first`` / ``second`` mean and se over those seeds; the
    seed-level statistics of the per-seed differences: ``seed_ci``, their 95% Student-t
    interval (None for one seed), ``higher`` / ``lower`` / ``equal`` (seeds where A is
    above, below, level with B) and ``sign_p``, the exact sign test; and, where every pair
    of runs carries per-problem records of the same problems, the 95% ``ci`` of the
    two-level (seeds, then problems) bootstrap and the exact McNemar ``p`` on the pooled
    discordant counts ``b`` (A right, B wrong) and ``c`` (``None`` otherwise: ``gaps`` maps
    each reason, a key of ``GAPS``, to its seeds)."""
    result: dict[float, dict[str, Any]] = {}
    for fraction, pairs in paired_runs(rows, task, better, baseline).items():
        first = [100 * float(row["test_accuracy"]) for _, row, _ in pairs]
        second = [100 * float(row["test_accuracy"]) for _, _, row in pairs]
        differences = [x - y for x, y in zip(first, second, strict=True)]
        mean, se = mean_se(differences)
        counts, gaps = problem_counts(pairs)
        # all or nothing: a CI over some of the seeds would not describe the mean over all
        complete = bool(counts) and not gaps
        b, c = sum(b for b, _, _ in counts), sum(c for _, c, _ in counts)
        higher, lower, equal = sign_counts(differences)
        seed_interval = seed_t_interval(differences)
        result[fraction] = {
            "mean": mean,
            "se": se,
            "n": len(pairs),
            "seed_ci": seed_interval[1:] if seed_interval else None,
            "higher": higher,
            "lower": lower,
            "equal": equal,
            "sign_p": sign_test(higher, lower),
            "first": dict(zip(("mean", "se"), mean_se(first), strict=True)),
            "second": dict(zip(("mean", "se"), mean_se(second), strict=True)),
            "ci": paired_bootstrap(counts) if complete else None,
            "p": mcnemar_exact(b, c) if complete else None,
            "b": b if complete else None,
            "c": c if complete else None,
            "problems": sum(n for _, _, n in counts) if complete else None,
            "gaps": gaps,
        }
    return result


def comparison_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every paired comparison of a results file's rows (``first_of_each_run`` of them),
    one dict each: ``task``, ``first`` and ``second`` (modes), ``fraction``, and
    ``paired_differences``'s fields (``first`` / ``second`` hold each side's mean and se
    there as ``first_accuracy`` / ``second_accuracy``). For tables written by hand."""
    table = []
    for task in sorted({row["task"] for row in rows}):
        for better, baseline in COMPARISONS:
            for fraction, d in paired_differences(rows, task, better, baseline).items():
                table.append(
                    {
                        "task": task,
                        "first": better,
                        "second": baseline,
                        "fraction": fraction,
                        **{k: v for k, v in d.items() if k not in ("first", "second")},
                        "first_accuracy": d["first"],
                        "second_accuracy": d["second"],
                    }
                )
    return table


def signed(value: float) -> str:
    return f"{value:+.1f}"


def spread_text(d: dict[str, Any]) -> str:
    """`` ± se`` of a difference over seeds; nothing for one seed."""
    return f" ± {d['se']:.1f}" if d["n"] > 1 else ""


def interval_text(ci: tuple[float, float]) -> str:
    return f"[{signed(ci[0])}, {signed(ci[1])}]"


def mode_order(name: str) -> int:
    """Where a variant sits in the report's tables: as ``TITLES`` lists it, others last."""
    return list(TITLES).index(name) if name in TITLES else len(TITLES)


def runs_by_cell(
    rows: list[dict[str, Any]], task: str, field: str
) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """(variant, fraction) -> a task's rows that carry ``field`` (an accuracy of 0 counts,
    an empty history does not), ordered by data size, then as the mode table lists the
    variants."""
    cells: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["task"] == task and row.get(field) not in (None, []):
            cells[(variant(row), float(row["train_fraction"]))].append(row)
    return dict(sorted(cells.items(), key=lambda item: (item[0][1], mode_order(item[0][0]))))


def p_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


STATISTICS_LEGEND = (
    "Two-level bootstrap 95% CI, the headline interval: resamples the seeds, then each drawn "
    "seed's test problems, so both kinds of variation count. Seed t 95%: the Student-t "
    "interval of the per-seed differences (n − 1 degrees of freedom; none for one seed), the "
    "seeds the only unit. Pooled McNemar p: exact, on the discordant problems pooled over "
    "seeds (b: first right, second wrong; c: the reverse); it counts every seed's problems as "
    "independent, so it tests these runs on these problems, not whether another seed would "
    "agree. First higher: on how many seeds; sign p: the exact two-sided sign test over "
    "seeds (ties left out; never below 0.25 with three seeds)."
)
"""The report's explanation of ``statistics_text``'s columns, in the order printed."""
STATISTICS_COLUMNS = 5


def statistics_header(first: str = "first") -> str:
    """The header cells of ``statistics_text``; ``first`` names the side counted higher."""
    return (
        f"two-level bootstrap 95% CI | seed t 95% | pooled McNemar p (b / c) | {first} higher "
        "| sign p"
    )


STATISTICS_HEADER = statistics_header()


def statistics_text(d: dict[str, Any]) -> str:
    """The cells of a paired difference's statistics: the two-level bootstrap CI, the seed
    t interval, the pooled McNemar p with its b / c, the sign count and the sign test's p
    (``—`` for what the comparison lacks: per-problem records, a second seed)."""
    if d["ci"] is not None:
        interval, test = interval_text(d["ci"]), f"{p_text(d['p'])} ({d['b']} / {d['c']})"
    else:
        interval = test = "—"
    seed = interval_text(d["seed_ci"]) if d["seed_ci"] is not None else "—"
    count = f"{d['higher']} of {d['n']}" + (f" ({d['equal']} level)" if d["equal"] else "")
    return f"{interval} | {seed} | {test} | {count} | {p_text(d['sign_p'])}"


def side_text(side: dict[str, float], n: int) -> str:
    return f"{side['mean']:.1f} ± {side['se']:.1f}" if n > 1 else f"{side['mean']:.1f}"


def comparison_lines(
    rows: list[dict[str, Any]], task: str, cells: dict[tuple[str, float], dict[str, Any]]
) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """Markdown: each claim's paired difference, and the data needed to match standard
    fine-tuning on all the data; and, for the plot, each comparison's label and numbers."""
    lines: list[str] = []
    gaps: list[str] = []
    plotted: list[tuple[str, dict[str, Any]]] = []
    for better, baseline in COMPARISONS:
        for fraction, d in paired_differences(rows, task, better, baseline).items():
            lines.append(
                f"| {TITLES[better]} − {TITLES[baseline]} | {100 * fraction:g}% "
                f"| {side_text(d['first'], d['n'])} | {side_text(d['second'], d['n'])} "
                f"| {d['mean']:+.1f}{spread_text(d)} | {statistics_text(d)} |"
            )
            if d["gaps"]:
                gaps.append(
                    f"- {better} − {baseline}, {100 * fraction:g}%: "
                    + "; ".join(
                        f"{GAPS[reason]}: seed{'s' if len(seeds) > 1 else ''} "
                        + ", ".join(map(str, seeds))
                        for reason, seeds in d["gaps"].items()
                    )
                )
            plotted.append((f"{better} − {baseline}, {100 * fraction:g}%", d))
    if lines:
        lines = [
            "Paired by seed (same seed, same data): test accuracy of each side and their difference, "
            f"points; mean ± standard error over seeds. {STATISTICS_LEGEND}",
            "",
            "| comparison | data | first | second | difference | " + STATISTICS_HEADER + " |",
            "|---|---|---|---|---|" + "---|" * STATISTICS_COLUMNS,
            *lines,
            "",
        ]
    if plotted and all(len(d["gaps"].get("missing", [])) == d["n"] for _, d in plotted):
        lines += [
            "No bootstrap CI or McNemar p: these rows carry no per-problem test results (they were written "
            "before results rows recorded them), so each comparison has only its seed-paired "
            "mean ± se, its seed t interval and its sign count.",
            "",
        ]
    elif gaps:
        lines += [
            "No bootstrap CI or McNemar p (only the seed-level statistics) where a pair of runs "
            "is not compared problem by problem:",
            "",
            *gaps,
            "",
        ]
    fractions = sorted({f for _, f in cells})
    method, baseline = LESS_DATA_CLAIM
    ran = [f for f in fractions if (method, f) in cells]  # no sentence about an unrun method
    if ran and (baseline, fractions[-1]) in cells and len(fractions) > 1:
        target = cells[(baseline, fractions[-1])]["mean"]
        enough = [f for f in ran if cells[(method, f)]["mean"] >= target]
        found = (
            f"with {100 * enough[0]:g}% of the data" if enough else "at none of the fractions run"
        )
        lines += [
            f"Standard fine-tuning on {100 * fractions[-1]:g}% of the data: {target:.1f}%. "
            f"Distilling step-by-step matches or beats that mean {found}.",
            "",
        ]
    return lines, plotted


def teacher_differences(rows: list[dict[str, Any]], task: str) -> dict[tuple[str, float], Any]:
    """(variant, fraction) -> the student's test accuracy minus its teacher's on the same
    problems (points): ``mean`` / ``se`` over seeds, ``n``, ``student`` and ``teacher``
    (mean accuracies), the paired bootstrap ``ci`` and McNemar ``p`` with ``b`` (student
    right, teacher wrong) and ``c``, and the seed-level ``seed_ci``, ``higher`` / ``lower`` /
    ``equal`` and ``sign_p`` as in ``paired_differences``. Only where every run of the cell records both its own
    and its teacher's per-problem correctness (``teacher_test_correct``)."""
    result = {}
    for key, runs in runs_by_cell(rows, task, "test_accuracy").items():
        if not all(
            r.get("test_correct")
            and len(r.get("teacher_test_correct", "")) == len(r["test_correct"])
            for r in runs
        ):
            continue
        counts = [discordant(r["test_correct"], r["teacher_test_correct"]) for r in runs]
        differences = [100 * (b - c) / n for b, c, n in counts]
        mean, se = mean_se(differences)
        b, c = sum(x[0] for x in counts), sum(x[1] for x in counts)
        higher, lower, equal = sign_counts(differences)
        seed_interval = seed_t_interval(differences)
        result[key] = {
            "mean": mean,
            "se": se,
            "n": len(runs),
            "seed_ci": seed_interval[1:] if seed_interval else None,
            "higher": higher,
            "lower": lower,
            "equal": equal,
            "sign_p": sign_test(higher, lower),
            "student": statistics.fmean(100 * float(r["test_accuracy"]) for r in runs),
            "teacher": statistics.fmean(
                100 * r["teacher_test_correct"].count("1") / len(r["teacher_test_correct"])
                for r in runs
            ),
            "ci": paired_bootstrap(counts),
            "p": mcnemar_exact(b, c),
            "b": b,
            "c": c,
        }
    return result


def teacher_lines(rows: list[dict[str, Any]], task: str) -> list[str]:
    """Markdown: each variant against its own teacher, problem by problem (the paper's
    claim that the small student outperforms the teacher)."""
    differences = teacher_differences(rows, task)
    if not differences:
        return []
    lines = [
        "The student against its teacher (few-shot CoT) on the same test problems: the "
        "student's accuracy minus the teacher's, points, mean ± se over seeds; the statistics "
        "as above, the student first (b: student right, teacher wrong; c: the reverse). The "
        "teacher is one fixed set of answers, so only the student's seeds vary. The teacher's "
        "unparseable answers count as wrong.",
        "",
        "| student | data | student % | teacher % | difference | "
        + statistics_header("student")
        + " |",
        "|---|---|---|---|---|" + "---|" * STATISTICS_COLUMNS,
    ]
    for (name, fraction), d in differences.items():
        lines.append(
            f"| {TITLES.get(name, name)} (n={d['n']}) | {100 * fraction:g}% "
            f"| {d['student']:.1f} | {d['teacher']:.1f} | {d['mean']:+.1f}{spread_text(d)} "
            f"| {statistics_text(d)} |"
        )
    return [*lines, ""]


def history_lines(rows: list[dict[str, Any]], task: str) -> list[str]:
    """Markdown: validation accuracy after each epoch, mean over the seeds that recorded
    it (``valid_history``), and the epoch each seed's kept weights come from: whether
    training was still improving when it stopped."""
    curves = runs_by_cell(rows, task, "valid_history")
    if not curves:
        return []
    epochs = sorted(
        {
            round(float(h["epoch"]), 2)
            for runs in curves.values()
            for r in runs
            for h in r["valid_history"]
        }
    )
    lines = [
        "Validation accuracy (%) after each epoch, mean over the seeds; last column: the epoch "
        "of each seed's kept weights (the best validation).",
        "",
        "| mode | data | " + " | ".join(f"{e:g}" for e in epochs) + " | kept |",
        "|---|---|" + "---:|" * len(epochs) + "---|",
    ]
    for (name, fraction), runs in curves.items():
        by_epoch: dict[float, list[float]] = defaultdict(list)
        kept = []
        for r in runs:
            history = r["valid_history"]
            for h in history:
                by_epoch[round(float(h["epoch"]), 2)].append(100 * float(h["valid_accuracy"]))
            # the run's best step; else the first best, as training keeps it
            best = next(
                (h for h in history if h.get("step") == r.get("best_step")),
                max(history, key=lambda h: float(h["valid_accuracy"])),
            )
            kept.append(f"{float(best['epoch']):g}")
        cells = [f"{statistics.fmean(by_epoch[e]):.1f}" if by_epoch[e] else "" for e in epochs]
        lines.append(
            f"| {TITLES.get(name, name)} | {100 * fraction:g}% | "
            + " | ".join(cells)
            + f" | {', '.join(kept)} |"
        )
    return [*lines, ""]


def percent(value: Any) -> str:
    """An accuracy in [0, 1] as a percentage with one decimal ("" when missing)."""
    return f"{100 * float(value):.1f}" if value is not None else ""


def teacher_accuracies(rows: list[dict[str, Any]], task: str) -> dict[float, set[str]]:
    """Each teacher test accuracy (%, one decimal) the task's runs recorded -> the variants
    that read that teacher's annotations."""
    by_value: dict[float, set[str]] = {}
    for r in rows:
        if r["task"] == task and r.get("teacher_test_accuracy") is not None:
            by_value.setdefault(round(100 * r["teacher_test_accuracy"], 1), set()).add(variant(r))
    return by_value


def teacher_line(rows: list[dict[str, Any]], task: str) -> str | None:
    """The teacher's test accuracy, as the runs recorded it: one figure, or, where runs
    read different teachers' annotations (a weaker teacher's recipe), one per teacher,
    naming the variants that read each (never a mean across teachers)."""
    by_value = teacher_accuracies(rows, task)
    if not by_value:
        return None
    if len(by_value) == 1:
        return f"{next(iter(by_value)):.1f}%"
    return "; ".join(
        f"{value:.1f}% ({', '.join(sorted(names))})" for value, names in sorted(by_value.items())
    )


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
        "Comparisons are paired: the two runs share a seed and hence their training data. Where "
        "both runs' rows record each test problem's correctness (and the same test problems, in "
        "the same order), the difference also gets a 95% confidence interval from a paired "
        f"bootstrap ({RESAMPLES:,} resamples, fixed seed: each draws the seeds with replacement, "
        "then each drawn seed's test problems with replacement, so both the seed-to-seed and the "
        "problem-to-problem variation count) and an exact two-sided McNemar p-value on the "
        "discordant problems pooled over seeds (binomial, b + c trials, 1/2). Every paired "
        "difference also gets the seed-level statistics, which count each seed once however "
        "many problems it answers: a 95% Student-t interval of the per-seed differences and a "
        "sign count with its exact sign test.",
        "",
        "Which to read: the bootstrap CI is the headline interval, the only one that counts "
        "both kinds of variation (another seed, and another draw of test problems). It errs "
        "narrow: its seed part has no small-sample correction (resampling three seeds cannot "
        "show more spread than those three did), and each seed's problems are drawn on their "
        "own though the seeds share them. So the seed t interval is printed as its check: it "
        "asks only whether another seed, on these test problems, would agree, with a t "
        "quantile of 4.30 for three seeds. Where the t interval includes 0 and the bootstrap CI does not, the "
        "seeds alone do not settle the sign of the difference, and a claim should say so. "
        "The pooled McNemar p counts every seed's problems as independent, so it reads as "
        '"these runs differ on these problems", not as a claim about seeds; the sign test '
        "cannot go below 0.25 with three seeds.",
        "",
    ]
    for task, cells in sorted(table.items()):
        fractions = sorted({fraction for _, fraction in cells})
        variants = sorted(
            {name for name, _ in cells},
            key=mode_order,
        )
        lines += [f"## {task}", ""]
        teacher = teacher_line(rows, task)
        if teacher is not None:
            lines += [f"Teacher (few-shot CoT) test accuracy: {teacher}", ""]
        lines.append("| mode | " + " | ".join(f"{100 * f:g}% data" for f in fractions) + " |")
        lines.append("|---|" + "---|" * len(fractions))
        for name in variants:
            cells_text = []
            for fraction in fractions:
                cell = cells.get((name, fraction))
                cells_text.append(cell_text(cell))
            lines.append(f"| {TITLES.get(name, name)} | " + " | ".join(cells_text) + " |")
        lines.append("")
        comparisons, plotted = comparison_lines(rows, task, cells)
        lines += comparisons
        lines += teacher_lines(rows, task)
        lines += history_lines(rows, task)
        pngs = plot_task(task, cells, sorted(teacher_accuracies(rows, task)), output)
        pngs += plot_differences(task, plotted, output)
        for png in pngs:
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
    lines += ["", wall_time_line(rows), ""]
    path = output / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def wall_time_line(rows: list[dict[str, Any]]) -> str:
    """The cost of the runs: their wall time summed, in hours, and how many lack one."""
    timed = [float(row["wall_seconds"]) for row in rows if row.get("wall_seconds") is not None]
    runs = "the 1 timed run" if len(timed) == 1 else f"the {len(timed)} timed runs"
    line = f"Wall time of {runs}, training and testing: {sum(timed) / 3600:.2f} hours."
    if len(timed) < len(rows):
        line += f" {len(rows) - len(timed)} of {len(rows)} runs record no wall time."
    return line


def teacher_rules(axis: Any, teachers: list[float]) -> None:
    """A dashed line at each teacher's accuracy; named by its value where there are several."""
    for accuracy in teachers:
        label = f"teacher (few-shot CoT){f' {accuracy:.1f}%' if len(teachers) > 1 else ''}"
        axis.axhline(float(accuracy), color="gray", linestyle="--", label=label)


def plot_task(
    task: str, cells: dict[tuple[str, float], dict[str, Any]], teachers: list[float], output: Path
) -> list[Path]:
    """The accuracy curves and the mode bar chart, each teacher's test accuracy (%) a dashed
    line (numbers: a string would make matplotlib's y axis categorical)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    fractions = sorted({fraction for _, fraction in cells})
    for baseline, names in CURVE_PLOTS:
        if (
            len(fractions) < 2
            or not any(name == baseline for name, _ in cells)
            or not any(name.startswith("dss") for name, _ in cells)
        ):
            continue
        figure, axis = plt.subplots(figsize=(6, 4))
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
                label=TITLES.get(name, name),
            )
        teacher_rules(axis, teachers)
        axis.set_xscale("log", base=2)
        axis.set_xticks([100 * f for f in fractions], [f"{100 * f:g}%" for f in fractions])
        axis.set_xlabel("training data used (% of the training split)")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(
            f"{task}: distilling step-by-step vs {TITLES[baseline].split(' (')[0]}", fontsize=10
        )
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
        figure.tight_layout()
        path = output / f"{task}-dss-vs-{baseline}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        written.append(path)
    largest = max(fractions)
    bars = [(name, cells[(name, largest)]) for name in TITLES if (name, largest) in cells]
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
            list(positions), [TITLES[name].replace(" (", "\n(") for name, _ in bars], fontsize=7
        )
        if teachers:
            teacher_rules(axis, teachers)
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


def plot_differences(
    task: str, comparisons: list[tuple[str, dict[str, Any]]], output: Path
) -> list[Path]:
    """The paired differences with their 95% bootstrap intervals as error bars (those
    without per-problem data: hollow, with ± one standard error over seeds)."""
    if not comparisons:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 1.2 + 0.45 * len(comparisons)))
    for position, (_, d) in enumerate(comparisons):
        if d["ci"] is not None:
            error = [[d["mean"] - d["ci"][0]], [d["ci"][1] - d["mean"]]]
            style = {"color": "tab:blue", "marker": "o"}
        else:
            error = [[d["se"]], [d["se"]]]
            style = {"color": "gray", "marker": "o", "markerfacecolor": "white"}
        axis.errorbar([d["mean"]], [position], xerr=error, capsize=4, **style)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(comparisons)), [label for label, _ in comparisons], fontsize=8)
    axis.invert_yaxis()  # in the table's order, top to bottom
    axis.set_xlabel("difference in test accuracy (points); bars: 95% paired bootstrap CI")
    if any(d["ci"] is None for _, d in comparisons):
        axis.set_title(
            f"{task}: paired differences (hollow: no per-problem data, ± 1 se over seeds)",
            fontsize=9,
        )
    else:
        axis.set_title(f"{task}: paired differences", fontsize=10)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path = output / f"{task}-differences.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return [path]
