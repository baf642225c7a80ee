"""How small a difference the recipe study can detect: the power of the exact McNemar
test on pooled discordant problems, for a pair of variants in a results file.

The discordance rate (the share of test problems on which exactly one of the two runs
is right) is read from the pair's committed runs. For a true accuracy difference δ, each
discordant problem favours the first variant with probability (1 + δ/d) / 2, where d is
the discordance rate; the script simulates the pooled counts over S seeds of n problems
and reports, for each S, the smallest δ (in points, either sign) that the test at
α = 0.05 detects with the power asked (default 80%). With the study's seeds this says
what "no difference found" rules out. Like the pooled McNemar test itself, it treats the
problems of different seeds as independent: seed-to-seed variation, which the report's
bootstrap CI includes, is not modelled, so read the figures as a best case. Usage:

    python benchmarks/paper/power.py benchmarks/paper/svamp-recipes/results.jsonl dss standard
"""

from __future__ import annotations

import argparse

import numpy as np

from stepdistill.report import paired_runs, problem_counts
from stepdistill.results import first_of_each_run, read_results
from stepdistill.stats import mcnemar_exact


def discordance(
    rows: list[dict], first: str, second: str, task: str, fraction: float = 1.0
) -> tuple[float, int, int]:
    """(pooled discordance rate, problems per seed, seeds) over the seeds on which both
    ran, paired as ``stepdistill report`` pairs them (same task, fraction and seed)."""
    pairs = paired_runs(rows, task, first, second).get(fraction, [])
    counts, gaps = problem_counts(pairs)
    if not counts:
        raise SystemExit(f"no seed on which both {first} and {second} ran ({task}, {fraction:g})")
    if gaps:
        raise SystemExit(f"seeds not comparable problem by problem: {gaps}")
    n = counts[0][2]
    return sum(b + c for b, c, _ in counts) / sum(m for _, _, m in counts), n, len(counts)


def power(delta: float, rate: float, problems: int, seeds: int, reps: int, alpha: float) -> float:
    """Share of simulated studies in which McNemar's p < alpha, at true difference
    ``delta`` (a fraction, ≤ rate)."""
    rng = np.random.default_rng(0)
    total = problems * seeds
    favour_first = (1 + delta / rate) / 2
    # each problem: discordant with probability rate; a discordant one favours the first
    # variant with probability favour_first
    discordant_counts = rng.binomial(total, rate, size=reps)
    b = rng.binomial(discordant_counts, favour_first)
    return float(
        np.mean(
            [
                mcnemar_exact(int(x), int(d - x)) < alpha
                for x, d in zip(b, discordant_counts, strict=True)
            ]
        )
    )


def detectable(
    rate: float, problems: int, seeds: int, target: float, reps: int, alpha: float
) -> float:
    """Smallest δ (points) detected with power ≥ target, on a 0.5-point grid."""
    for half_points in range(1, int(200 * rate) + 1):
        delta = half_points / 200
        if delta < rate and power(delta, rate, problems, seeds, reps, alpha) >= target:
            return 100 * delta
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results")
    parser.add_argument("first")
    parser.add_argument("second")
    parser.add_argument("--task", help="default: the results file's only task")
    parser.add_argument("--fraction", type=float, default=1.0, help="train fraction (default 1)")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--power", type=float, default=0.8)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args()
    rows = first_of_each_run(read_results(args.results), args.results)
    tasks = sorted({row["task"] for row in rows})
    if args.task is None and len(tasks) != 1:
        raise SystemExit(f"several tasks in {args.results}: give --task (one of {tasks})")
    task = args.task or tasks[0]
    rate, problems, ran = discordance(rows, args.first, args.second, task, args.fraction)
    print(
        f"{args.first} vs {args.second}: {100 * rate:.1f}% of test problems discordant "
        f"({ran} seed(s) of {problems} problems)"
    )
    for seeds in (int(s) for s in args.seeds.split(",")):
        delta = detectable(rate, problems, seeds, args.power, args.reps, args.alpha)
        print(
            f"  {seeds} seed(s): a difference of ±{delta:.1f} points is detected with "
            f"{100 * args.power:.0f}% power (McNemar, α = {args.alpha})"
        )


if __name__ == "__main__":
    main()
