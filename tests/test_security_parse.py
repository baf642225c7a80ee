"""Issue 29, item 3: answer patterns on hostile teacher text.

The built-in patterns used to take cubic time on "The answer is (3 + 4)" followed by
spaces (110 s for 4,000); a user's backtracking pattern had no time limit at all."""

from __future__ import annotations

import time

import pytest

from stepdistill.parse import OK, TIMEOUT, parse_continuation
from stepdistill.tasks import ParserSpec, builtin_names, load_task, task_from_dict

MARKERS = {"svamp": "The answer is", "esnli": "Answer:"}


@pytest.mark.parametrize("name", builtin_names() + ["default"])
def test_builtin_patterns_are_linear_on_runs_of_spaces(name):
    task = (
        task_from_dict({"name": "t", "files": {"train": "t.jsonl"}})
        if name == "default"
        else load_task(name)
    )
    marker = MARKERS.get(name, "So the answer is")
    hostile = [
        f"{marker} (3 + 4)" + " " * 100_000 + "x",  # the attack of the issue, 25x longer
        "x" + " " * 100_000 + f"y {marker} 7.",  # spaces before the marker
        f"{marker} 7" + " \t" * 50_000 + ".",  # mixed whitespace before the final period
        (f"{marker} " * 5_000),  # the marker many times
    ]
    for text in hostile:
        start = time.perf_counter()
        parse_continuation(text, task)
        assert time.perf_counter() - start < 0.5, (name, text[:40])


def test_linear_patterns_parse_as_before():
    svamp = load_task("svamp")
    parsed = parse_continuation(" 84 / 2 = 42.   The answer is ( 84.0 / 2.0 ) .  ", svamp)
    assert (parsed.status, parsed.rationale, parsed.label) == (OK, "84 / 2 = 42.", "( 84.0 / 2.0 )")
    cqa = load_task("cqa")
    parsed = parse_continuation(
        "Rivers flow. So the answer is (c) river.", cqa, ["a", "b", "river"]
    )
    assert (parsed.status, parsed.label) == (OK, "river")


def test_user_pattern_runs_under_a_time_limit(monkeypatch):
    import stepdistill.parse as parse

    monkeypatch.setattr(parse, "PATTERN_TIMEOUT_S", 0.2)
    task = task_from_dict(
        {"name": "t", "files": {"train": "t.jsonl"}, "parser": {"pattern": r"(?P<label>(a|aa)+)$"}}
    )
    start = time.perf_counter()
    parsed = parse_continuation("a" * 60 + "b", task)
    assert time.perf_counter() - start < 2
    assert (parsed.status, parsed.label) == (TIMEOUT, None)


def test_invalid_user_pattern_is_a_task_error():
    from stepdistill.tasks import TaskError

    with pytest.raises(TaskError, match="not a valid regular expression"):
        ParserSpec(pattern="(?P<label>(")
