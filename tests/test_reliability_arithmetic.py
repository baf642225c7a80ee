"""The equation metric never executes code: property-based tests of the safe evaluator.

Random text, random valid expressions (checked against a reference evaluator that
works in exact fractions), and hostile strings: every call returns a value or
"invalid", within 0.1 s and a few MB, and raises no audit event for exec, compile,
import, open or a subprocess while it runs.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepdistill.arithmetic import MAX_DEPTH, MAX_LENGTH, evaluate, safe_value, same_value

TIME_LIMIT = 0.1  # CPU seconds per call
MEMORY_LIMIT = 4 * 1024 * 1024  # bytes, tracemalloc peak per call

# ------------------------------------------------------------------ no code runs

_watching = {"on": False, "events": []}
_FORBIDDEN = (
    "exec",
    "compile",
    "import",
    "open",
    "os.system",
    "subprocess.Popen",
    "os.exec",
    "os.posix_spawn",
    "ctypes.",
)


def _audit(event: str, _args: object) -> None:
    if _watching["on"] and event.startswith(_FORBIDDEN):
        _watching["events"].append(event)


sys.addaudithook(_audit)  # cannot be removed; inert unless a check below is running


def checked(text: str) -> float | None:
    """safe_value(text), asserting the call's time, memory and audit events."""
    # CPU time of this thread, with the collector paused: the bound is on the
    # evaluator's own work, not on other processes or unrelated garbage.
    gc.disable()
    tracemalloc.start()
    _watching.update(on=True, events=[])
    started = time.thread_time()
    try:
        value = safe_value(text)
    finally:
        seconds = time.thread_time() - started
        _watching["on"] = False
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        gc.enable()
    assert _watching["events"] == [], (text[:80], _watching["events"])
    assert seconds < TIME_LIMIT, (text[:80], seconds)
    assert peak < MEMORY_LIMIT, (text[:80], peak)
    assert value is None or isinstance(value, float)
    return value


# ------------------------------------------------------------------ a reference evaluator


def reference(tree: object) -> Fraction | None:
    """Exact value of an expression tree; None for a division by zero."""
    if isinstance(tree, Fraction):
        return tree
    operator, *parts = tree  # type: ignore[misc]
    values = [reference(p) for p in parts]
    if any(v is None for v in values):
        return None
    if operator == "neg":
        return -values[0]
    a, b = values
    if operator == "+":
        return a + b
    if operator == "-":
        return a - b
    if operator == "*":
        return a * b
    return None if b == 0 else a / b


def render(tree: object, draw_style: st.DataObject) -> str:
    """Text for a tree, in SVAMP's style and others: spaces or not, x × ÷ −, decimals."""
    if isinstance(tree, Fraction):
        number = tree
        if number.denominator == 1:
            return draw_style.draw(
                st.sampled_from(
                    [f"{number.numerator}", f"{number.numerator}.0", f"{number.numerator}."]
                )
            )
        return f"{float(number):.2f}".rstrip("0")
    operator, *parts = tree  # type: ignore[misc]
    if operator == "neg":
        return (
            "-" + render(parts[0], draw_style)
            if not isinstance(parts[0], Fraction)
            else f"-{render(parts[0], draw_style)}"
        )
    symbol = draw_style.draw(
        st.sampled_from(
            {"+": ["+"], "-": ["-", "−"], "*": ["*", "×", "x"], "/": ["/", "÷"]}[operator]
        )
    )
    space = draw_style.draw(st.sampled_from(["", " ", "  "]))
    return f"({space}{render(parts[0], draw_style)}{space}{symbol}{space}{render(parts[1], draw_style)}{space})"


numbers = st.one_of(
    st.integers(0, 10_000).map(Fraction),
    st.integers(0, 99_999).map(lambda n: Fraction(n, 100)),  # two decimals, as in SVAMP
)
trees = st.recursive(
    numbers,
    lambda inner: st.one_of(
        st.tuples(st.sampled_from(["+", "-", "*", "/"]), inner, inner),
        st.tuples(st.just("neg"), inner),
    ),
    max_leaves=12,
)


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(trees, st.data())
def test_valid_expressions_match_the_exact_reference(tree, data):
    text = render(tree, data)
    expected = reference(tree)
    value = checked(text)
    if expected is None:
        assert value is None, text  # a division by zero is invalid, never a number
    elif abs(expected) > 1e300:
        assert value is None or value == pytest.approx(float(expected)), text
    else:
        assert value is not None, text
        assert value == pytest.approx(float(expected), rel=1e-12, abs=1e-12), text
        assert same_value(text, f"{float(expected):.20f}")  # the metric agrees with the reference


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(st.text(max_size=600))
def test_random_text_is_a_value_or_invalid(text):
    checked(text)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.text(alphabet="0123456789.+-*/()×÷−x eE_", max_size=700))
def test_random_arithmetic_looking_text_is_a_value_or_invalid(text):
    value = checked(text)
    if value is not None:
        assert len(text) <= MAX_LENGTH and all(c not in text for c in "eE_")


HOSTILE = [
    "__import__('os').system('touch /tmp/pwned')",
    "__import__('os')",
    "lambda: 1",
    "(lambda x: x)(1)",
    "().__class__.__bases__[0].__subclasses__()",
    "1 .__class__",
    "open('/etc/passwd').read()",
    "exec('1')",
    "eval('1+1')",
    "[1, 2]",
    "{1: 2}",
    "1 if 1 else 2",
    "1; 2",
    "9**9**9",
    "10**100000",
    "2 ** 1000000",
    "1 << 100000",
    "1e308 * 1e308",
    "1e999",
    "float('inf')",
    "1 / 0",
    "1 / (0.3 - 0.1 - 0.2)",
    "(5 - 5) ÷ (2 − 2)",
    "0/0",
    "-" * 100 + "1",
    "(" * 100_000 + "1" + ")" * 100_000,
    "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1),
    "9" * 100_000,
    "9" * 500,
    "9" * 300 + " * " + "9" * 200,
    " * ".join(["99999"] * 85),
    "1" * 10**6,
    "\x00",
    "１２ + ３",  # full-width digits are not ASCII digits
    "٣ + ٣",
    "١٢٣",
    "² + ²",
    "1_000 + 1",
    "1j",
    "\u202e1 + 2",
    "",
    "   ",
    None,
]


@pytest.mark.parametrize("text", HOSTILE, ids=[repr(t)[:40] for t in HOSTILE])
def test_hostile_strings_are_invalid_fast_and_run_nothing(text):
    assert checked(text) is None, text


# Big or odd but legal: a value (or invalid past a float's range), as fast.
LEGAL = [
    (" / ".join(["7"] * 120), 7.0**-118),
    ("1" + " + 1" * 127, 128.0),
    (" * ".join(["99"] * 80), float(99**80)),
    ("9" * 200 + " * " + "9" * 200, None),  # 1e400: past a float's range, so invalid
    ("-" * MAX_DEPTH + "1", 1.0),
    ("1 +\n2", 3.0),
    ("0x10", 0.0),  # "x" is a multiplication sign (teachers write 3 x 4), not hexadecimal
]


@pytest.mark.parametrize("text, value", LEGAL, ids=[t[:30] for t, _ in LEGAL])
def test_big_but_legal_expressions_have_their_value(text, value):
    result = checked(text)
    assert result is None if value is None else result == pytest.approx(value, rel=1e-12)


def test_depth_and_length_limits_are_exact():
    assert evaluate("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == 1.0
    assert checked("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1)) is None
    longest = "1" + " + 1" * ((MAX_LENGTH - 1) // 4)
    assert len(longest) <= MAX_LENGTH and evaluate(longest) == (MAX_LENGTH - 1) // 4 + 1
    assert checked(longest + " + 1") is None


def test_exact_arithmetic_where_floats_would_round():
    assert evaluate("(0.1 + 0.2) - 0.3") == 0.0
    assert evaluate("1 / 3 * 3") == 1.0
    assert safe_value("1 / ((0.1 + 0.2) - 0.3)") is None  # not 3.6e16
    assert evaluate("9" * 250 + " / " + "9" * 249) == pytest.approx(
        10.0
    )  # huge, exact, then a float


def test_figures():
    """The whole hostile and legal corpus in one pass: every answer what the per-string
    tests expect, and the figures printed are the ones asserted (the corpus's peak
    traced memory and the slowest call's CPU time, both under the per-call bounds)."""
    worst_seconds, worst_peak = 0.0, 0
    anything = object()  # a hostile string may have a value; it must not hang or raise
    for text, expected in [*((t, anything) for t in HOSTILE), *LEGAL]:
        if text is None:
            continue
        tracemalloc.start()
        started = time.thread_time()
        value = safe_value(text)
        worst_seconds = max(worst_seconds, time.thread_time() - started)
        worst_peak = max(worst_peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        if expected is anything:
            assert value is None or isinstance(value, float), text[:80]
        elif expected is None:
            assert value is None, text[:80]
        else:
            assert value == pytest.approx(expected, rel=1e-12), text[:80]
    assert worst_seconds < TIME_LIMIT and worst_peak < MEMORY_LIMIT
    print(
        f"\narithmetic: {len(HOSTILE)} hostile and {len(LEGAL)} big legal strings; slowest call "
        f"{worst_seconds * 1000:.2f} ms CPU (limit {TIME_LIMIT * 1000:.0f}), peak "
        f"{worst_peak / 2**20:.2f} MB (limit {MEMORY_LIMIT // 2**20})"
    )
