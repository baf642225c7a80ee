"""The report's paired statistics: correctness records, McNemar, the paired bootstrap."""

import math
from fractions import Fraction

import numpy as np
import pytest

from stepdistill.stats import (
    correctness_record,
    discordant,
    ids_digest,
    mcnemar_exact,
    paired_bootstrap,
    paired_difference,
    teacher_record,
)


def brute_force_mcnemar(b: int, c: int) -> float:
    """Two-sided exact binomial test by enumeration: the probability, under Bin(b + c,
    1/2), of every outcome at most as likely as the one observed."""
    n = b + c
    probability = [Fraction(math.comb(n, k), 2**n) for k in range(n + 1)]
    observed = probability[b]
    return float(sum(p for p in probability if p <= observed))


@pytest.mark.parametrize(
    "b, c, p", [(0, 6, 0.03125), (6, 0, 0.03125), (5, 5, 1.0), (0, 0, 1.0), (1, 0, 1.0)]
)
def test_mcnemar_known_values(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p)


@pytest.mark.parametrize("b, c", [(3, 12), (10, 4), (7, 8), (0, 1), (20, 35), (2, 40)])
def test_mcnemar_equals_a_brute_force_sum(b, c):
    # with p = 1/2 the binomial is symmetric, so "doubling the smaller tail" and
    # "summing every outcome as unlikely as the one seen" agree
    assert mcnemar_exact(b, c) == pytest.approx(min(1.0, brute_force_mcnemar(b, c)), rel=1e-12)


def test_mcnemar_with_thousands_of_discordant_pairs_does_not_overflow():
    p = mcnemar_exact(2000, 2300)
    assert 0 < p < 1e-4
    assert mcnemar_exact(3000, 3000) == 1.0


def test_correctness_record_in_test_order_and_without_unlabelled_problems():
    rows = [
        {"id": "a", "gold": "1", "correct": True},
        {"id": "b", "gold": "2", "correct": False},
        {"id": "u", "gold": None, "correct": False},  # no gold label: not in the accuracy
        {"id": "c", "gold": "3", "correct": True},
    ]
    record = correctness_record(rows)
    assert record == {"test_correct": "101", "test_ids": ids_digest(["a", "b", "c"])}
    assert len(record["test_ids"]) == 16
    assert ids_digest(["a", "c", "b"]) != record["test_ids"]  # order matters


def test_teacher_record_follows_the_students_problems_in_their_order():
    predictions = [
        {"id": "b", "gold": "2", "correct": True},
        {"id": "u", "gold": None, "correct": False},  # no gold: not counted, as above
        {"id": "a", "gold": "1", "correct": False},
    ]
    teacher = [
        {"id": "a", "teacher_correct": True},
        {"id": "b", "teacher_correct": False},
        {"id": "z", "teacher_correct": True},  # a problem the student was not tested on
    ]
    assert teacher_record(predictions, teacher) == {"teacher_test_correct": "01"}
    # a problem the teacher did not answer: no problem-by-problem comparison at all
    assert teacher_record(predictions, teacher[1:]) == {}


def test_discordant_counts():
    assert discordant("1100", "1010") == (1, 1, 4)
    assert discordant("111", "000") == (3, 0, 3)
    with pytest.raises(ValueError, match="not the same problems"):
        discordant("11", "110")


def test_bootstrap_interval_contains_the_point_estimate_and_is_reproducible():
    counts = [(30, 18, 200), (25, 20, 200), (33, 15, 200)]
    point = paired_difference(counts)
    assert point == pytest.approx(100 * np.mean([12 / 200, 5 / 200, 18 / 200]))
    low, high = paired_bootstrap(counts)
    assert low < point < high
    assert paired_bootstrap(counts) == (low, high)  # fixed seed: the same report every time


def test_bootstrap_narrows_with_more_problems():
    widths = []
    for n in (50, 500, 5000):
        # the same rates on every seed: only the problems vary
        low, high = paired_bootstrap([(n // 5, n // 10, n)] * 3)
        assert low < 10.0 < high
        widths.append(high - low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]


def test_bootstrap_widens_with_seed_to_seed_variation():
    steady = paired_bootstrap([(30, 20, 200)] * 3)
    varying = paired_bootstrap([(40, 10, 200), (30, 20, 200), (20, 30, 200)])
    assert varying[1] - varying[0] > steady[1] - steady[0]


def test_bootstrap_of_a_single_seed_matches_the_normal_approximation():
    b, c, n = 60, 30, 400
    low, high = paired_bootstrap([(b, c, n)])
    # the variance of a per-problem difference in {+1, −1, 0}
    mean = (b - c) / n
    se = 100 * math.sqrt(((b + c) / n - mean**2) / n)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.05)


def test_no_discordant_problems_gives_a_zero_interval():
    assert paired_bootstrap([(0, 0, 100), (0, 0, 100)]) == (0.0, 0.0)
