"""The report's paired statistics: correctness records, McNemar, the paired bootstrap, and
the seed-level t interval and sign test."""

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
    seed_t_interval,
    sign_counts,
    sign_test,
    t_quantile_975,
    t_two_sided_probability,
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


@pytest.mark.parametrize(
    "df, quantile",
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (5, 2.5706), (10, 2.2281)]
    + [(30, 2.0423), (120, 1.9799)],
)
def test_t_quantile_matches_the_tables(df, quantile):
    assert t_quantile_975(df) == pytest.approx(quantile, abs=1e-4)


def test_t_quantile_tends_to_the_normal_and_is_exact_for_one_and_two_degrees():
    assert t_quantile_975(10_000) == pytest.approx(1.95996, abs=3e-4)
    # df 1 is the Cauchy, P(|T| ≤ t) = 2·arctan(t)/π: the quantile is tan(0.475π);
    # df 2 has P(|T| ≤ t) = t / √(2 + t²): the quantile is √(2·0.95² / (1 − 0.95²))
    assert t_quantile_975(1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-10)
    assert t_quantile_975(2) == pytest.approx(math.sqrt(2 * 0.95**2 / (1 - 0.95**2)), rel=1e-10)


def test_t_probability_against_numerical_integration_of_the_density():
    for df in (3, 4, 7):
        x = np.linspace(0, 2.5, 200_001)
        density = (1 + x**2 / df) ** (-(df + 1) / 2)
        density *= math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
        integral = 2 * float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))
        assert t_two_sided_probability(2.5, df) == pytest.approx(integral, rel=1e-8)
    with pytest.raises(ValueError, match="positive integer"):
        t_two_sided_probability(1.0, 0)


def test_seed_t_interval_by_hand():
    # differences 1, 2, 3: mean 2, s = 1, se = 1/√3, half-width 4.3027/√3 = 2.4841
    mean, low, high = seed_t_interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert (low, high) == (
        pytest.approx(2 - 2.48414, abs=1e-4),
        pytest.approx(2 + 2.48414, abs=1e-4),
    )
    # two seeds, +0.5 and +1.5: s = 1/√2, se = 1/2, t(1) = 12.706: [−5.35, +7.35]
    _, low, high = seed_t_interval([0.5, 1.5])
    assert (low, high) == (pytest.approx(1 - 6.3531, abs=1e-3), pytest.approx(1 + 6.3531, abs=1e-3))
    assert seed_t_interval([4.0, 4.0, 4.0]) == (4.0, 4.0, 4.0)  # seeds that agree exactly
    assert seed_t_interval([2.5]) is None and seed_t_interval([]) is None


def test_sign_counts_and_the_exact_sign_test():
    assert sign_counts([0.6, 0.6, 0.5]) == (3, 0, 0)
    assert sign_counts([1.0, -0.5, 0.0, 0.0, 2.0]) == (2, 1, 2)
    # all of n seeds on one side: p = 2 / 2**n, so three seeds can never reach 0.05
    assert sign_test(3, 0) == pytest.approx(0.25)
    assert sign_test(0, 3) == pytest.approx(0.25)
    assert sign_test(5, 0) == pytest.approx(0.0625)
    assert sign_test(6, 0) == pytest.approx(0.03125)
    # 8 of 10: 2·(1 + 10 + 45)/1024 = 0.109375
    assert sign_test(8, 2) == pytest.approx(0.109375)
    assert sign_test(2, 1) == 1.0 and sign_test(0, 0) == 1.0
