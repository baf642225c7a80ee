import math

import pytest

from stepdistill.arithmetic import MAX_DEPTH, evaluate, safe_value, same_value


@pytest.mark.parametrize(
    "text, value",
    [
        ("( 84.0 / 2.0 )", 42.0),
        ("( ( 17.0 + 15.0 ) + 2.0 )", 34.0),
        ("(12 - 2) - 7", 3.0),
        ("-3 + 5", 2.0),
        ("2 × 3 ÷ 4", 1.5),
        ("7 − 2", 5.0),
        (".5 * 4", 2.0),
    ],
)
def test_evaluates_plain_arithmetic(text, value):
    assert math.isclose(evaluate(text), value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('echo hi')",
        "lambda: 1",
        "2 ** 1000000",
        "1 / 0",
        "(1 + 2",
        "1 + 2)",
        "",
        "abc",
        "1e308 * 1e308",
        "(" * (MAX_DEPTH + 5) + "1" + ")" * (MAX_DEPTH + 5),
        "9" * 600,
    ],
)
def test_rejects_anything_else_without_executing_it(text):
    assert safe_value(text) is None


def test_same_value_compares_values_not_strings():
    assert same_value("(84 / 2)", "( 84.0 / 2.0 )")
    assert same_value("(104 - 78)", "( ( 72.0 + 32.0 ) - 78.0 )")
    assert not same_value("(84 / 3)", "( 84.0 / 2.0 )")
    assert not same_value(None, "1")
    assert not same_value("os.system('x')", "1")
