"""Issue 25's recipe table: each recipe's test accuracy (mean ± se over seeds) and its
difference to standard fine-tuning, paired by seed, with the two-level bootstrap 95% CI,
the exact pooled McNemar p and the seed-level statistics (the seed t interval, on how many
seeds the recipe was higher), one column group per results file. Where fewer seeds are
paired than the baseline ran, the cell says so and gives the baseline's mean on the paired
seeds: the difference is not the two accuracy columns subtracted. Reads only committed results
files (through ``stepdistill.report``, so the figures are the reports'), prints markdown.

Each argument is ``COLUMN=RESULTS`` or ``COLUMN:ROW SUFFIX=RESULTS``: results files that
share a column (a task) sit side by side, and a suffix puts a file's recipes on rows of
their own (a different budget or data size of the same task). Usage:

    python benchmarks/paper/recipes_table.py \\
        SVAMP=benchmarks/paper/svamp-recipes/results.jsonl \\
        "SVAMP:, 25% of train=benchmarks/paper/svamp-quarter/results.jsonl" \\
        "SVAMP:, 10 epochs=benchmarks/paper/svamp-longer/results.jsonl" \\
        CQA=benchmarks/paper/cqa-recipes/results.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stepdistill.report import (
    aggregate,
    interval_text,
    mode_order,
    p_text,
    paired_differences,
    signed,
    spread_text,
)
from stepdistill.results import first_of_each_run, read_results


def parse_source(text: str) -> tuple[str, str, Path]:
    """``COLUMN[:SUFFIX]=PATH`` -> (column, row suffix, path)."""
    name, separator, path = text.partition("=")
    if not separator or not name or not path:
        raise SystemExit(f"{text!r}: expected COLUMN=RESULTS or COLUMN:ROW SUFFIX=RESULTS")
    column, _, suffix = name.partition(":")
    return column, suffix, Path(path)


def accuracy_text(cell: dict[str, Any] | None) -> str:
    if cell is None:
        return ""
    if cell["n"] < 2:
        return f"{cell['mean']:.1f} (1 seed)"
    return f"{cell['mean']:.1f} ± {cell['se']:.1f} ({cell['n']} seeds)"


def difference_text(
    d: dict[str, Any] | None, baseline: bool, baseline_seeds: int | None = None, name: str = ""
) -> str:
    """``−1.8 ± 1.2 [−5.0, +2.0], p = 0.34; seed t [−5.6, +2.0], 1 of 3 higher``: the
    bootstrap CI and pooled p only where every pair of runs carries per-problem records,
    the seed t interval from two seeds; and where fewer seeds are paired than the baseline
    (``name``) ran (``baseline_seeds``), its mean on the paired ones. ``—`` for the
    baseline itself."""
    if baseline:
        return "—"
    if d is None:
        return "no seed paired"
    text = signed(d["mean"]) + spread_text(d)
    if d["ci"] is not None:
        text += f" {interval_text(d['ci'])}, p = {p_text(d['p'])}"
    if d["seed_ci"] is not None:
        text += f"; seed t {interval_text(d['seed_ci'])}"
    text += f"{';' if d['seed_ci'] is None else ','} {d['higher']} of {d['n']} higher"
    if baseline_seeds is not None and d["n"] < baseline_seeds:
        seeds = "1 seed" if d["n"] == 1 else f"{d['n']} seeds"
        them = "it" if d["n"] == 1 else "them"
        text += f" (paired on {seeds}: {name} {d['second']['mean']:.1f} on {them})"
    return text


def recipe_cells(
    rows: list[dict[str, Any]], baseline: str
) -> dict[tuple[str, float], tuple[dict[str, Any], dict[str, Any] | None]]:
    """(recipe, fraction) -> (its accuracy cell, its paired difference to the baseline,
    None for the baseline itself), over a results file with one task."""
    tasks = sorted({row["task"] for row in rows})
    if len(tasks) != 1:
        raise SystemExit(f"expected one task per results file, found {tasks}")
    cells = aggregate(rows).get(tasks[0], {})
    result = {}
    for (recipe, fraction), cell in cells.items():
        difference = None
        if recipe != baseline:
            difference = paired_differences(rows, tasks[0], recipe, baseline).get(fraction)
        result[(recipe, fraction)] = (cell, difference)
    return result


def table(sources: list[tuple[str, str, Path]], baseline: str = "standard") -> str:
    columns = list(dict.fromkeys(column for column, _, _ in sources))
    found: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any] | None]]] = {}
    groups: dict[str, int] = {}  # a row group (a suffix, a fraction) -> its place
    order: dict[str, tuple[int, bool, int]] = {}  # a row -> (group, not baseline, mode)
    name_group: dict[str, str] = {}  # a row -> its group, to find the baseline's row
    for column, suffix, path in sources:
        if not path.is_file():
            raise SystemExit(f"{path}: no such results file")
        rows = first_of_each_run(read_results(path), path)
        rows = [row for row in rows if row.get("test_accuracy") is not None]
        if not rows:
            continue
        cells = recipe_cells(rows, baseline)
        fractions = {fraction for _, fraction in cells}
        for (recipe, fraction), value in cells.items():
            group = suffix + (f", {100 * fraction:g}% of train" if len(fractions) > 1 else "")
            groups.setdefault(group, len(groups))
            order.setdefault(
                recipe + group, (groups[group], recipe != baseline, mode_order(recipe))
            )
            found.setdefault(recipe + group, {})[column] = value
            name_group[recipe + group] = group
    # rows in groups (a suffix, a fraction) in the order the files list them, the
    # baseline first in each, then the recipes in the report's order (others last)
    names = sorted(found, key=order.__getitem__)
    header = ["recipe"]
    for column in columns:
        header += [
            f"{column} test %",
            f"{column}: − {baseline} [bootstrap 95% CI], McNemar p; seed t 95%, seeds higher",
        ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        cells = [name]
        for column in columns:
            if column not in found[name]:
                cells += ["not run", ""]  # this recipe has no row in that file
                continue
            cell, difference = found[name][column]
            is_baseline = not order[name][1]
            partner = found.get(baseline + name_group[name], {}).get(column)
            seeds = partner[0]["n"] if partner else None
            cells += [
                accuracy_text(cell),
                difference_text(difference, is_baseline, seeds, baseline),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sources", nargs="+", help="COLUMN=RESULTS or COLUMN:ROW SUFFIX=RESULTS")
    parser.add_argument("--baseline", default="standard")
    args = parser.parse_args()
    print(table([parse_source(text) for text in args.sources], args.baseline))


if __name__ == "__main__":
    main()
