"""Parsers against the real PaLM continuations, and the teacher accuracies they imply."""

import json

import pytest

from stepdistill.annotate import annotate
from stepdistill.parse import EMPTY, INVALID_LABEL, OK, UNPARSEABLE, parse_continuation
from stepdistill.tasks import load_task


def first_output(data_dir, task, file):
    return json.loads((data_dir / "dss" / task / "llm" / file).read_text())[0]


def test_svamp_real_line_is_cut_before_the_invented_next_question(data_dir):
    parsed = parse_continuation(
        first_output(data_dir, "svamp", "train_CoT_0.json"), load_task("svamp")
    )
    assert parsed.status == OK
    assert parsed.label == "(84 / 2)"
    assert parsed.rationale.startswith("Luke scored 84 points") and "Q:" not in parsed.rationale


def test_cqa_real_line_gives_the_choice_text(data_dir):
    parsed = parse_continuation(
        first_output(data_dir, "cqa", "train_CoT_0.json"),
        load_task("cqa"),
        ["park", "coloring book", "garden center", "math problem", "gravity"],
    )
    assert (parsed.status, parsed.label) == (OK, "math problem")


def test_esnli_and_anli_real_lines(data_dir):
    esnli = parse_continuation(
        first_output(data_dir, "esnli", "valid_CoT_0.json"), load_task("esnli")
    )
    assert (esnli.status, esnli.label) == (OK, "neutral")
    anli = parse_continuation(
        first_output(data_dir, "anli1", "valid_CoT_0.json"), load_task("anli1")
    )
    assert (anli.status, anli.label) == (OK, "contradiction")


def test_unparseable_and_ambiguous_outputs_never_become_labels():
    svamp, cqa, esnli = load_task("svamp"), load_task("cqa"), load_task("esnli")
    assert (
        parse_continuation("Ed lost more than 19 marbles.\n\nQ: next", svamp).status == UNPARSEABLE
    )
    assert parse_continuation("", svamp).status == EMPTY
    either = parse_continuation(
        "So the answer is either (a) pond or (e) lake.", cqa, ["pond", "b", "c", "d", "lake"]
    )
    assert either.status == INVALID_LABEL and either.label is None
    assert parse_continuation("Because.\nAnswer: maybe", esnli).status == INVALID_LABEL


@pytest.mark.parametrize(
    "task, split, low, high",
    [
        ("svamp", "test", 0.70, 0.80),
        ("svamp", "train", 0.70, 0.78),
        ("cqa", "test", 0.74, 0.80),
        ("esnli", "test", 0.70, 0.76),
        ("anli1", "test", 0.63, 0.69),
    ],
)
def test_teacher_accuracy_matches_the_paper_files(data_dir, tmp_path, task, split, low, high):
    summary = annotate(task, "palm-replay", tmp_path, splits=(split,), data=data_dir, quiet=True)
    accuracy = summary["splits"][split]["teacher_accuracy"]
    assert low <= accuracy <= high, accuracy
    rows = [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
    assert {
        "id",
        "input",
        "gold_label",
        "teacher_label",
        "rationale",
        "parse_status",
        "raw",
    } <= set(rows[0])
    assert all(r["teacher_label"] is None for r in rows if r["parse_status"] != OK)
