"""Paired statistics for the report: what a results row records of its run's test
predictions, a paired bootstrap over seeds and problems, the exact McNemar test on the
problems pooled over seeds, and the seed-level statistics (a Student-t interval and a
sign test over the per-seed differences).

Two runs of a comparison (same seed, same data, two modes) answer the same test
problems, so they are compared problem by problem. On one problem the difference
"A right − B right" is +1 (A right, B wrong: one of McNemar's ``b``), −1 (A wrong, B
right: one of ``c``) or 0, so the problem-level statistics need only ``(b, c, n)`` per seed; the seed-level ones
need only each seed's difference.

Pure functions: numpy and the standard library, no torch, no files.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

RESAMPLES = 10_000
"""Bootstrap resamples; with the fixed ``BOOTSTRAP_SEED`` a report is reproducible."""
BOOTSTRAP_SEED = 0


def ids_digest(ids: Iterable[Any]) -> str:
    """The first 16 hex digits of the sha256 of the ids joined by newlines: two runs with
    the same digest were tested on the same problems in the same order."""
    return hashlib.sha256("\n".join(str(i) for i in ids).encode("utf-8")).hexdigest()[:16]


def correctness_record(prediction_rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """What a results row carries of a run's test predictions (``predictions/test.jsonl``,
    one row per problem in test order): ``test_correct``, a '0'/'1' per problem, and
    ``test_ids``, the digest of their ids. Problems without a gold label are left out,
    as the accuracy leaves them out."""
    labelled = [row for row in prediction_rows if row.get("gold") is not None]
    return {
        "test_correct": "".join("1" if row["correct"] else "0" for row in labelled),
        "test_ids": ids_digest(row["id"] for row in labelled),
    }


def teacher_record(
    prediction_rows: Sequence[dict[str, Any]], teacher_rows: Iterable[dict[str, Any]]
) -> dict[str, str]:
    """The teacher's correctness on the same test problems, in the same order as
    ``correctness_record``'s (``teacher_test_correct``), from its rationale dataset's test
    rows (``teacher_correct``; an answer that did not parse counts as wrong, as the
    teacher's accuracy counts it). Empty when a problem has no teacher row: a student is
    compared with its teacher problem by problem only where the teacher answered them all."""
    correct = {row.get("id"): bool(row.get("teacher_correct")) for row in teacher_rows}
    labelled = [row for row in prediction_rows if row.get("gold") is not None]
    if not labelled or any(row["id"] not in correct for row in labelled):
        return {}
    return {"teacher_test_correct": "".join("1" if correct[row["id"]] else "0" for row in labelled)}


def discordant(first: str, second: str) -> tuple[int, int, int]:
    """``(b, c, n)`` of two ``test_correct`` strings over the same problems: b where only
    the first is right, c where only the second is, n problems."""
    if len(first) != len(second):
        raise ValueError(f"not the same problems: {len(first)} vs {len(second)}")
    b = sum(x == "1" and y == "0" for x, y in zip(first, second, strict=True))
    c = sum(x == "0" and y == "1" for x, y in zip(first, second, strict=True))
    return b, c, len(first)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: under "no difference" each discordant problem is
    equally likely to favour either side, so X ~ Binomial(b + c, 1/2) and
    p = min(1, 2 · P(X ≤ min(b, c))). Integer arithmetic, exact for any counts."""
    if b < 0 or c < 0:
        raise ValueError("counts must not be negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_difference(counts: Sequence[tuple[int, int, int]]) -> float:
    """Accuracy difference in points: the mean over seeds of each seed's (b − c) / n
    (each seed weighs the same, as in the seed-paired mean)."""
    return 100 * float(np.mean([(b - c) / n for b, c, n in counts]))


def paired_bootstrap(
    counts: Sequence[tuple[int, int, int]],
    resamples: int = RESAMPLES,
    level: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile confidence interval (points) of ``paired_difference`` from a two-stage
    (cluster) bootstrap: each resample draws the seeds with replacement, then, for each
    seed drawn, its problems with replacement, independently each time it is drawn.

    Seed-to-seed variation (which runs a seed trains) and problem-to-problem variation
    (which test problems happen to be in the split) both widen the interval; with one
    seed only the second is left. Drawing n problems whose differences are +1, −1 or 0
    with replacement is one multinomial draw of the three counts, so a resample costs
    O(seeds), not O(problems).

    Two limits, both making the interval narrower than it should be: with few seeds the
    seed stage cannot show more spread than the seeds drawn did (``seed_t_interval`` is the
    check), and the seeds share their test problems, but each seed's are drawn on their
    own, so a problem that splits the two recipes on every seed counts as independent
    evidence each time."""
    if not counts:
        raise ValueError("no pairs")
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(counts), size=(resamples, len(counts)))
    means = np.empty(picks.shape)
    for index, (b, c, n) in enumerate(counts):
        drawn = picks == index
        draws = rng.multinomial(n, [b / n, c / n, (n - b - c) / n], size=int(drawn.sum()))
        means[drawn] = (draws[:, 0] - draws[:, 1]) / n
    low, high = np.percentile(100 * means.mean(axis=1), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


# Seed-level statistics. The seed is what varies from one run of a recipe to the next
# (its training data draw, its initialisation, its data order), so "would another seed
# agree?" is asked of the per-seed differences alone: n seeds are n observations, however
# many test problems each one answers. Above, the pooled McNemar test counts every seed's
# problems as independent, and so it is no answer to that question.


def t_two_sided_probability(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with ``df`` (a positive integer) degrees of freedom, in
    closed form (Abramowitz & Stegun 26.7.3-4): with θ = arctan(t / √df),
    odd df: (2/π)·(θ + sin θ·(cos θ + (2/3)·cos³θ + … + (2·4···(df−3))/(1·3···(df−2))·cos^(df−2)θ)),
    even df: sin θ·(1 + (1/2)·cos²θ + (1·3)/(2·4)·cos⁴θ + … + (1·3···(df−3))/(2·4···(df−2))·cos^(df−2)θ).
    """
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, not {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    sine, cosine = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, cosine  # the bracket's terms: cos θ, (2/3)·cos³θ, …
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= (2 * k) / (2 * k + 1) * cosine**2
        return (2 / math.pi) * (theta + sine * total)
    total, term = 0.0, 1.0  # 1, (1/2)·cos²θ, (1·3)/(2·4)·cos⁴θ, …
    for k in range(1, df // 2 + 1):
        total += term
        term *= (2 * k - 1) / (2 * k) * cosine**2
    return sine * total


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (the half-width of a
    two-sided 95% interval in standard errors: 12.706 for df 1, 4.303 for 2, 1.960 as df
    grows), by bisection on ``t_two_sided_probability`` to 1e-12."""
    low, high = 0.0, 1.0
    while t_two_sided_probability(high, df) < 0.95:
        low, high = high, 2 * high
    while high - low > 1e-12:
        middle = (low + high) / 2
        if t_two_sided_probability(middle, df) < 0.95:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def seed_t_interval(differences: Sequence[float]) -> tuple[float, float, float] | None:
    """``(mean, low, high)``: the mean of the per-seed differences and its 95% Student-t
    interval, mean ± t(0.975, n − 1)·s/√n, the seeds the only unit that varies (None for
    fewer than two seeds: one seed says nothing of the next). With three seeds
    t = 4.303, so the interval is wide unless the seeds agree closely."""
    if len(differences) < 2:
        return None
    mean = float(np.mean(differences))
    half = t_quantile_975(len(differences) - 1) * float(np.std(differences, ddof=1))
    half /= math.sqrt(len(differences))
    return mean, mean - half, mean + half


def sign_counts(differences: Iterable[float]) -> tuple[int, int, int]:
    """``(higher, lower, equal)``: on how many seeds the first side's accuracy was above,
    below and equal to the second's."""
    values = list(differences)
    return sum(d > 0 for d in values), sum(d < 0 for d in values), sum(d == 0 for d in values)


def sign_test(higher: int, lower: int) -> float:
    """Exact two-sided sign test over seeds (ties left out): McNemar's binomial, on seeds
    instead of problems, p = min(1, 2 · P(X ≤ min(higher, lower))), X ~ Bin(higher +
    lower, 1/2). Its smallest value with n seeds is 2 / 2ⁿ: 0.25 for three, 0.0625 for
    five, so three seeds that all agree are not by themselves significant at 0.05."""
    return mcnemar_exact(higher, lower)
