"""The Python API: Student.load on a run, its model folder, or a bare HF model folder."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tiny_run import make_run

from stepdistill.data import DataError
from stepdistill.student import Prediction, Student, rationale_from_single

INPUTS = ["premise: a man plays\nhypothesis: someone plays", "Luke scored 84 points", "x" * 50]


@pytest.fixture(scope="module")
def run(tiny_causal, tmp_path_factory):
    return make_run(tiny_causal, tmp_path_factory.mktemp("student-api") / "run")


@pytest.fixture(scope="module")
def student(run):
    return Student.load(run)


def test_import_does_not_load_torch():
    code = "import sys, stepdistill.student, stepdistill.predict; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_predict_returns_labels_then_rationales_in_order(student):
    labels = student.predict(INPUTS)
    assert [type(p) for p in labels] == [Prediction] * 3 and all(
        p.rationale is None for p in labels
    )
    assert len({p.raw for p in labels}) == 3  # the tiny model answers each input differently
    both = student.predict(INPUTS, rationale=True)
    assert [p.raw for p in both] == [p.raw for p in labels]
    assert all(isinstance(p.rationale, str) for p in both)
    assert both[0].as_dict().keys() == {"label", "raw", "rationale"}


def test_batched_equals_one_at_a_time(student):
    assert [student.predict([text])[0] for text in INPUTS] == student.predict(INPUTS)


def test_records_go_through_the_task_template(student):
    record = {"premise": "a man plays", "hypothesis": "someone plays", "label": "entailment"}
    assert student.predict([record]) == student.predict([INPUTS[0]])
    with pytest.raises(DataError, match="missing field 'hypothesis'"):
        student.predict([{"premise": "only"}])


def test_model_folder_of_a_run_loads_the_run(run, student):
    again = Student.load(run / "model")
    assert again.is_run and again.task.name == "tiny-nli" and again.name == "run"
    assert again.predict(INPUTS) == student.predict(INPUTS)


def test_bare_model_folder(tiny_seq2seq):
    student = Student.load(tiny_seq2seq)
    assert not student.is_run and student.seq2seq
    assert len(student.predict(["hello", {"input": "there"}])) == 2
    assert [len(text) > 0 for text in student.complete(["hello", "a longer prompt"], 4)] == [
        True,
        True,
    ]
    assert student.predict([]) == [] and student.complete([], 4) == []


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run or model folder"):
        Student.load(tmp_path / "nope")


def test_single_mode_rationale_comes_from_the_one_output(tiny_causal, tmp_path):
    student = Student.load(make_run(tiny_causal, tmp_path / "single", mode="single"))
    [prediction] = student.predict(INPUTS[:1], rationale=True)
    assert prediction.rationale is not None and prediction.raw.startswith(prediction.rationale)
    assert rationale_from_single("two plus two\nAnswer: 4") == "two plus two"


def test_rationale_input_runs_read_the_rationale_field(tiny_causal, tmp_path):
    student = Student.load(make_run(tiny_causal, tmp_path / "ri", mode="rationale-input"))
    record = {"premise": "p", "hypothesis": "h", "rationale": "because"}
    assert student.format(record) == "premise: p\nhypothesis: h\nRationale: because"
    assert student.format({"premise": "p", "hypothesis": "h"}) == "premise: p\nhypothesis: h"
