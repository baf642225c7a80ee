"""annotate with live teachers: prompts from task data, samples, filtering, cost
estimates and budgets, demo bootstrapping (scripted teacher, temporary folders)."""

from __future__ import annotations

import json

import pytest
import yaml
from teacher_helpers import ScriptedTeacher, make_toy_task

from stepdistill.annotate import annotate
from stepdistill.annotations import load_annotation_samples, load_annotations
from stepdistill.bootstrap import bootstrap_demos
from stepdistill.cli import main
from stepdistill.cost import Budget, load_prices, price_of
from stepdistill.metrics import is_correct
from stepdistill.parse import parse_continuation
from stepdistill.prompts import build_prompt, render_answer
from stepdistill.tasks import builtin_names, load_task


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_demonstrations_parse_back_with_the_tasks_own_parser(name):
    task = load_task(name)
    assert 6 <= len(task.demonstrations) <= 10
    for demo in task.demonstrations:
        parsed = parse_continuation(render_answer(task, demo["rationale"], demo["label"]), task)
        assert parsed.status == "ok" and is_correct(task, parsed.label, demo["label"]), demo


def test_prompt_shapes_follow_the_task_data():
    esnli = load_task("esnli")
    prompt = build_prompt(
        esnli, "A man.\nA person.", {"premise": "A man.", "hypothesis": "A person."}
    )
    assert prompt.endswith("\n\nPremise: A man.\nHypothesis: A person.\nReasonings:")
    assert "\nAnswer: entailment\n\nPremise:" in prompt
    svamp = load_task("svamp")
    assert build_prompt(svamp, "How many?").endswith(
        "The answer is (23 - (5 * 3)).\n\nQ: How many?\nA:"
    )


def test_samples_are_all_kept_with_their_index(tmp_path):
    task = make_toy_task(tmp_path, count=4)
    teacher = ScriptedTeacher(temperature=0.7)
    summary = annotate(
        str(task), teacher, tmp_path / "out", splits=("train",), quiet=True, samples=3, store=False
    )
    rows = load_annotation_samples(tmp_path / "out", "train")
    assert [(row["id"], row["sample"]) for row in rows] == [
        (f"train-{i}", s) for i in range(4) for s in range(3)
    ]
    assert summary["splits"]["train"] | {"rows": 12, "examples": 4} == summary["splits"]["train"]
    assert (
        len(load_annotations(tmp_path / "out", "train")) == 4
    )  # one per example for older callers
    with pytest.raises(ValueError, match="temperature"):
        annotate(
            str(task),
            ScriptedTeacher(temperature=0.0),
            tmp_path / "o2",
            splits=("train",),
            quiet=True,
            samples=2,
        )


def test_filter_correct_drops_and_reports(tmp_path):
    task = make_toy_task(tmp_path, count=12)  # 10..21: the scripted model is wrong on 10, 15, 20
    summary = annotate(
        str(task),
        ScriptedTeacher(),
        tmp_path / "out",
        splits=("train",),
        quiet=True,
        filter_correct=True,
    )
    split = summary["splits"]["train"]
    assert split["dropped_incorrect"] == 3 and split["rows_written"] == 9
    assert split["teacher_correct"] == 9 and split["teacher_accuracy"] == pytest.approx(0.75)
    assert all(row["teacher_correct"] for row in load_annotation_samples(tmp_path / "out", "train"))


def test_estimate_asks_nothing_and_counts_what_is_not_stored(tmp_path):
    task = make_toy_task(tmp_path, count=10)
    teacher = ScriptedTeacher(model="gpt-4o-mini")
    before = annotate(
        str(task), teacher, tmp_path / "out", splits=("train",), quiet=True, estimate=True
    )
    assert not teacher.asked
    train = before["splits"]["train"]
    assert train["to_ask"] == 10 and train["prompt_tokens"] > 0 and train["cost_usd_expected"] > 0
    annotate(str(task), teacher, tmp_path / "out", splits=("train",), quiet=True, limit=4)
    after = annotate(
        str(task), teacher, tmp_path / "out", splits=("train",), quiet=True, estimate=True
    )
    assert after["splits"]["train"]["stored"] == 4 and after["splits"]["train"]["to_ask"] == 6


def test_cost_budget_and_price_table(tmp_path):
    prices_file = tmp_path / "prices.yaml"
    prices_file.write_text("my-model: {prompt: 1000000, completion: 0}\n")  # $1 a prompt token
    prices = load_prices(prices_file)
    assert price_of(3, 5, "my-model", prices) == pytest.approx(3.0)
    assert price_of(3, 5, "unknown-local-model", prices) == 0.0
    task = make_toy_task(tmp_path, count=10)
    summary = annotate(
        str(task),
        ScriptedTeacher(model="my-model"),
        tmp_path / "out",
        splits=("train",),
        quiet=True,
        prices=prices_file,
        max_cost=50.0,
    )
    assert "cost budget reached" in summary["stopped"]
    assert summary["usage"]["cost_usd"] >= 50.0 and summary["splits"]["train"]["rows"] < 10
    budget = Budget("x", {}, max_tokens=10)
    budget.add({"prompt_tokens": 4, "completion_tokens": 6})
    assert budget.exhausted() and "token budget" in budget.stopped


def test_bootstrap_demos_keeps_only_explanations_that_parse_back_to_gold(tmp_path):
    task = make_toy_task(tmp_path, count=12)
    summary = bootstrap_demos(str(task), ScriptedTeacher(), tmp_path / "demos.yaml", count=5)
    demos = yaml.safe_load((tmp_path / "demos.yaml").read_text())["demonstrations"]
    # 10 and 15 are answered wrongly by the scripted model: rejected, not relabelled.
    assert summary["kept"] == 5 and summary["rejected"] == {"label differs from gold": 2}
    assert [demo["input"] for demo in demos] == [f"Is {n} even?" for n in (11, 12, 13, 14, 16)]
    loaded = load_task(task)
    loaded.demonstrations = demos  # the file is usable as the task's demonstrations
    assert "Q: Is 16 even?\nA: 16 = 2 * 8 + 0" in build_prompt(loaded, "Is 7 even?")


def test_cli_estimate_and_annotate_with_options(tmp_path, capsys, monkeypatch):
    from teacher_helpers import SECRET, scripted_server

    task = make_toy_task(tmp_path, count=5)
    with scripted_server() as (url, state):
        code = main(
            [
                "annotate",
                "--task",
                str(task),
                "--teacher",
                "openai",
                "--model",
                "gpt-4o-mini",
                "--base-url",
                url,
                "--output",
                str(tmp_path / "out"),
                "--splits",
                "train",
                "--estimate",
            ]
        )
        estimate = json.loads(capsys.readouterr().out)
        assert code == 0 and estimate["total"]["to_ask"] == 5 and not state.attempts
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        code = main(
            [
                "annotate",
                "--task",
                str(task),
                "--teacher",
                "openai",
                "--model",
                "gpt-4o-mini",
                "--base-url",
                url,
                "--output",
                str(tmp_path / "out"),
                "--splits",
                "train",
                "--option",
                "style=chat",
                "--option",
                "max_tokens=64",
                "--concurrency",
                "2",
            ]
        )
    out = capsys.readouterr().out
    assert code == 0 and "cost $" in out and len(state.answered) == 5


def test_cli_bootstrap_demos_through_an_openai_server(tmp_path, capsys, monkeypatch):
    from teacher_helpers import SECRET, scripted_server

    monkeypatch.setenv("STEPDISTILL_API_KEY", SECRET)
    task = make_toy_task(tmp_path, count=8)
    with scripted_server() as (url, state):
        code = main(
            [
                "bootstrap-demos",
                "--task",
                str(task),
                "--teacher",
                "local-openai",
                "--model",
                "toy",
                "--base-url",
                url,
                "--output",
                str(tmp_path / "demos.yaml"),
                "--count",
                "3",
            ]
        )
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["kept"] == 3
    demos = yaml.safe_load((tmp_path / "demos.yaml").read_text())["demonstrations"]
    assert all(demo["rationale"] and demo["label"] in ("yes", "no") for demo in demos)
    # The teacher was told the gold label.
    assert all("The correct answer to the next question is" in prompt for prompt in state.attempts)
