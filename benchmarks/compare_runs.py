"""Two runs' test predictions, problem by problem: did a change (a new trainer, a new
precision, another machine) change what the student answers, beyond what chance explains?

Reads each run's ``predictions/test.jsonl`` (the same test problems in the same order),
prints each run's accuracy, how many predictions are identical, the discordant problems
(b: only the first right, c: only the second), the exact McNemar p and the 95% paired
bootstrap CI of the accuracy difference (``stepdistill.stats``, as ``stepdistill report``
computes them).

    python benchmarks/compare_runs.py RUN_A RUN_B
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stepdistill.io import read_jsonl
from stepdistill.stats import correctness_record, discordant, mcnemar_exact, paired_bootstrap


def compare(first: Path, second: Path) -> dict:
    a, b = (read_jsonl(run / "predictions" / "test.jsonl") for run in (first, second))
    ra, rb = correctness_record(a), correctness_record(b)
    if ra["test_ids"] != rb["test_ids"]:
        raise SystemExit(f"{first} and {second} were tested on different problems")
    only_first, only_second, n = discordant(ra["test_correct"], rb["test_correct"])
    low, high = paired_bootstrap([(only_first, only_second, n)])
    return {
        "problems": n,
        "first_accuracy": 100 * ra["test_correct"].count("1") / n,
        "second_accuracy": 100 * rb["test_correct"].count("1") / n,
        "identical_predictions": sum(
            x["prediction"] == y["prediction"] for x, y in zip(a, b, strict=True)
        ),
        "b": only_first,
        "c": only_second,
        "difference": 100 * (only_first - only_second) / n,
        "ci": [low, high],
        "p": mcnemar_exact(only_first, only_second),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    r = compare(args.first, args.second)
    print(
        f"{r['problems']} test problems: first {r['first_accuracy']:.1f}%, second "
        f"{r['second_accuracy']:.1f}%; identical predictions {r['identical_predictions']}; "
        f"only the first right {r['b']}, only the second {r['c']}: first − second "
        f"{r['difference']:+.1f} points [{r['ci'][0]:+.1f}, {r['ci'][1]:+.1f}], "
        f"McNemar p = {r['p']:.2f}"
    )
    print(json.dumps(r))


if __name__ == "__main__":
    main()
