"""Issue 27: a new user's own task and teacher, without surprises. One test per item of
the issue, and the new user's documented path (own task, OpenAI-compatible teacher on
loopback, run, predict) end to end on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from teacher_helpers import SECRET, ServerState, make_toy_task, scripted_server, toy_answer
from tiny_run import make_run

from stepdistill.annotate import annotate
from stepdistill.cli import main
from stepdistill.data import DataError
from stepdistill.io import read_jsonl
from stepdistill.metrics import is_correct
from stepdistill.parse import OK, parse_continuation
from stepdistill.tasks import TaskError, load_task, task_from_dict
from stepdistill.teachers import load_teacher

FAST = {"max_wait": 0.02, "timeout": 0.5}


def replay_task(folder, outputs, field=None, name="outputs.json"):
    """The toy task with stored teacher outputs in ``name``."""
    task = make_toy_task(folder, count=4)
    (folder / name).write_text(outputs)
    extra = f"teacher_outputs: {{train: [{name}]}}\n"
    extra += f"teacher_output_field: {field}\n" if field else ""
    task.write_text(task.read_text() + extra)
    return task


def answers(count=4):
    return [toy_answer(f"Is {n} even?") for n in range(10, 10 + count)]


# 1. Structured teacher files ---------------------------------------------------------


def test_a_list_of_objects_without_a_field_is_a_loud_error(tmp_path):
    rows = [{"input": "x", "gen_label": a, "org_label": "yes"} for a in answers()]
    task = replay_task(tmp_path, json.dumps(rows))
    with pytest.raises(DataError) as error:
        annotate(str(task), "replay", tmp_path / "out", splits=("train",), quiet=True)
    message = str(error.value)
    assert "outputs.json" in message and "row 1" in message and "gen_label" in message
    assert "teacher_output_field" in message


@pytest.mark.parametrize("shape", ["list", "jsonl"])
def test_a_field_selector_reads_a_list_of_objects_or_jsonl(tmp_path, shape):
    rows = [{"input": "x", "gen_label": a, "org_label": "yes"} for a in answers()]
    text = json.dumps(rows) if shape == "list" else "".join(json.dumps(r) + "\n" for r in rows)
    task = replay_task(tmp_path, text, field="gen_label", name=f"outputs.{shape}")
    summary = annotate(str(task), "replay", tmp_path / "out", splits=("train",), quiet=True)
    assert summary["splits"]["train"]["parsed"] == 4 and "warnings" not in summary


def test_a_low_parse_rate_is_a_warning(tmp_path, capsys):
    task = replay_task(tmp_path, json.dumps(["no marker here"] * 3 + answers(1)))
    summary = annotate(str(task), "replay", tmp_path / "out", splits=("train",))
    assert "only 1 of 4 teacher answers parsed" in summary["warnings"][0]
    assert "warning: train: only 1 of 4" in capsys.readouterr().err


def test_svamp_llama3_replays_the_third_party_file(data_dir, tmp_path):
    summary = annotate("svamp-llama3", "replay", tmp_path / "out", data=data_dir, quiet=True)
    test = summary["splits"]["test"]
    assert summary["teacher"] == "llama3-replay"
    assert (test["rows"], test["parsed"], test["teacher_correct"]) == (200, 178, 136)


# 2. A letter map for a fixed label set -----------------------------------------------

LETTER_TASK = {
    "name": "nli",
    "files": {"train": "t.jsonl"},
    "labels": ["entailment", "neutral", "contradiction"],
    "parser": {"pattern": r"(?s)^(?P<rationale>.*?)\s*Answer:\s*\((?P<letter>[a-c])\)(?P<label>)$"},
}


def test_letter_labels_map_a_bare_letter_to_its_label():
    plain = task_from_dict(LETTER_TASK)
    assert parse_continuation("Because. Answer: (b)", plain).label is None  # before: no way
    task = task_from_dict(
        {**LETTER_TASK, "letter_labels": {"a": "entailment", "b": "neutral", "c": "contradiction"}}
    )
    assert parse_continuation("Because. Answer: (b)", task).label == "neutral"
    with pytest.raises(TaskError, match="letter_labels"):
        task_from_dict({**LETTER_TASK, "letter_labels": {"a": "maybe"}})


# 4. Missing options are one-line errors ----------------------------------------------


@pytest.mark.parametrize("backend", ["openai", "hf"])
def test_a_missing_model_is_a_one_line_error(tmp_path, backend, capsys):
    task = make_toy_task(tmp_path)
    with pytest.raises(ValueError, match="needs --model"):
        load_teacher(backend, load_task(task))
    assert main(["annotate", "--task", str(task), "--teacher", backend]) == 2
    err = capsys.readouterr().err
    assert "needs --model" in err and "Traceback" not in err and len(err.splitlines()) == 1


# 6. The replay teacher says what it replays ------------------------------------------


def test_the_replay_teacher_is_named_after_its_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = replay_task(tmp_path, json.dumps(answers()), name="gpt4_outputs.json")
    summary = annotate(str(task), splits=("train",), quiet=True)
    assert summary["teacher"] == "gpt4_outputs-replay"
    assert summary["output"].endswith("toy-gpt4_outputs-replay")
    assert load_task("svamp").replay_name == "palm-replay"  # the built-in folders stay


# 7. Honest counters after a budget stop -----------------------------------------------


def test_asked_counts_only_requests_that_reached_the_server(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    task = make_toy_task(tmp_path, count=20)
    with scripted_server(ServerState(delay=0.02)) as (url, state):
        summary = annotate(
            str(task),
            "openai",
            tmp_path / "out",
            splits=("train",),
            quiet=True,
            max_tokens=300,
            teacher_options={
                "model": "m",
                "base_url": url,
                "concurrency": 4,
                "max_tokens": 40,
                **FAST,
            },
        )
    assert "stopped" in summary
    reached = sum(state.attempts.values())
    assert summary["store"]["asked"] == reached < 20
    assert summary["store"]["not_asked"] == 20 - reached


# 9. A number metric --------------------------------------------------------------------


def test_the_number_metric_ignores_a_trailing_unit():
    task = task_from_dict({"name": "n", "files": {"train": "t"}, "metric": "number"})
    assert is_correct(task, "9 (apples)", "9")
    assert is_correct(task, "$1,200", "( 600.0 * 2.0 )") and is_correct(task, "42 points", "42.0")
    assert not is_correct(task, "8 (apples)", "9") and not is_correct(task, "apples", "9")
    with pytest.raises(TaskError):
        task_from_dict({"name": "n", "files": {"train": "t"}, "metric": "numbers"})


# 10. The public API at the top level, without torch -------------------------------------


def test_the_public_api_is_importable_from_the_package_without_torch():
    code = (
        "import sys\n"
        "from stepdistill import Student, TrainConfig, annotate, train, run, load_task\n"
        "assert callable(train) and callable(annotate) and TrainConfig().task\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# 8. Rationales from a run that never learnt them ---------------------------------------


def test_rationale_from_a_standard_run_is_a_400_and_a_one_line_error(tiny_causal, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from stepdistill.serve import create_app
    from stepdistill.student import Student

    run = make_run(tiny_causal, tmp_path / "run", mode="standard")
    with TestClient(create_app(Student.load(run))) as client:
        reply = client.post("/v1/predict", json={"inputs": ["a"], "rationale": True})
        assert reply.status_code == 400 and "never learns to write a rationale" in reply.text
        assert client.post("/v1/predict", json={"inputs": ["a"]}).status_code == 200
    (tmp_path / "in.jsonl").write_text('{"id": "1", "premise": "a", "hypothesis": "b"}\n')
    code = main(
        [
            "predict",
            str(run),
            "--input",
            str(tmp_path / "in.jsonl"),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--rationale",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "never learns to write a rationale" in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists()


# The new user's path, end to end (README "Your own teacher") ---------------------------

NEW_TASK = """\
name: parity
files: {train: train.jsonl, test: test.csv}
input_fields: [question]
label_field: answer
labels: ["yes", "no"]
validation: {from: train, fraction: 0.25, seed: 0}
demonstrations:
  - {input: "Is 2 even?", rationale: "2 = 2 * 1 + 0, remainder 0.", label: "yes"}
  - {input: "Is 3 even?", rationale: "3 = 2 * 1 + 1, remainder 1.", label: "no"}
"""


def test_new_user_own_task_openai_teacher_run_predict_evaluate_export(
    tiny_causal, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    question = lambda n: f"Is {n} even?"  # noqa: E731
    answer = lambda n: "yes" if n % 2 == 0 else "no"  # noqa: E731
    (tmp_path / "train.jsonl").write_text(
        "".join(
            json.dumps({"question": question(n), "answer": answer(n)}) + "\n" for n in range(10, 26)
        )
    )
    (tmp_path / "test.csv").write_text(
        "question,answer\n" + "".join(f"{question(n)},{answer(n)}\n" for n in range(40, 46))
    )
    (tmp_path / "parity.yaml").write_text(NEW_TASK)
    with scripted_server() as (url, state):
        # 1. one command: the teacher annotates, the student trains
        assert main([
            "run", "--task", "parity.yaml", "--teacher", "openai", "--model", "toy-model",
            "--base-url", url, "--concurrency", "4", "--max-cost", "1",
            "--student", str(tiny_causal), "--max-steps", "2", "--batch-size", "4",
            "--eval-limit", "3", "--bf16", "false", "--run-name", "parity-run",
        ]) == 0  # fmt: skip
    assert sum(state.answered.values()) == 22  # 12 train + 4 valid (carved) + 6 test
    run = tmp_path / "runs" / "parity-run"
    summary = json.loads((tmp_path / "annotations" / "parity-openai" / "summary.json").read_text())
    assert summary["store"]["asked"] + summary["store"]["answered_from_store"] == 22
    # 2. predict with the trained student
    (tmp_path / "new.jsonl").write_text(json.dumps({"id": "a", "question": "Is 7 even?"}) + "\n")
    assert main(["predict", str(run), "--input", "new.jsonl", "--output", "preds.jsonl"]) == 0
    assert [row["id"] for row in read_jsonl(tmp_path / "preds.jsonl")] == ["a"]
    # 5. evaluate scores what the run scored, and the two kinds of result keep their files
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 0
    regenerated = json.loads(capsys.readouterr().out)
    assert regenerated["examples"] == 3 and "first 3 of 6" in regenerated["scored"]
    assert main(["evaluate", str(run), "--rescore"]) == 0
    assert (run / "eval" / "test-metrics.json").is_file()
    assert json.loads((run / "eval" / "test-rescored-metrics.json").read_text())["rescored"]
    assert json.loads((run / "eval" / "test-metrics.json").read_text())["rescored"] is False
    # export: one JSONL of the teacher's rationales to read or reuse
    assert (
        main(["export", "annotations/parity-openai", "--output", "r.jsonl", "--parsed-only"]) == 0
    )
    exported = read_jsonl(tmp_path / "r.jsonl")
    assert len(exported) == 22 and all(row["parse_status"] == OK for row in exported)
    # report_to: the training log in TensorBoard's own files
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert events.Scalars("test/accuracy")[0].step == 2


def test_report_to_a_tracker_that_is_not_installed_is_a_clear_error():
    from stepdistill.config import ConfigError, TrainConfig
    from stepdistill.tracking import chosen_backends

    assert chosen_backends(TrainConfig().report_to) == ["tensorboard"]
    assert chosen_backends("none") == []
    with pytest.raises(ConfigError, match="unknown"):
        chosen_backends("comet")
    if not __import__("importlib").util.find_spec("wandb"):
        with pytest.raises(ConfigError, match="pip install wandb"):
            chosen_backends("wandb")


# 3. The README's task-file reference runs ------------------------------------------------


def readme_task_example() -> str:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- task-reference -->\n```yaml\n", 1)[1]
    return block.split("```", 1)[0]


def test_the_readme_task_reference_covers_every_field_and_its_example_runs(tmp_path):
    from dataclasses import fields
    from pathlib import Path

    from stepdistill.tasks import Task

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    reference = readme.split("### Task-file reference", 1)[1].split("### annotate", 1)[0]
    missing = [
        f.name for f in fields(Task) if f.name != "source" and f"`{f.name}`" not in reference
    ]
    assert missing == []
    (tmp_path / "tickets.yaml").write_text(readme_task_example())
    rows = [
        ("t1", "Refund", "Charged twice", "0", "money"),
        ("t2", "Crash", "It closes", "1", "defect"),
        ("t3", "How to", "Where is the setting", "2", "asking"),
        ("t4", "Card", "Declined payment", "0", "money"),
    ]
    keys = ("ticket_id", "subject", "body", "category", "note")
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps(dict(zip(keys, r, strict=True))) + "\n" for r in rows)
    )
    (tmp_path / "test.csv").write_text(
        "ticket_id,subject,body,category,note\nt9,Bill,Too high,0,money\n"
    )
    completions = [
        " A double charge is about money. Category: billing.",
        " A crash is a defect. Category: (b).",  # a bare letter: letter_labels
        " A question about settings. Category: question.",
        " no category at all",  # unparseable, counted
    ]
    (tmp_path / "teacher_train.jsonl").write_text(
        "".join(json.dumps({"completion": c}) + "\n" for c in completions)
    )
    (tmp_path / "teacher_test.jsonl").write_text(
        json.dumps({"completion": " Money. Category: billing."}) + "\n"
    )
    task = load_task(tmp_path / "tickets.yaml")
    assert task.replay_name == "helpdesk-llm-replay"
    summary = annotate(
        task, "replay", tmp_path / "out", splits=("train", "valid", "test"), quiet=True
    )
    parsed = sum(s["parsed"] for s in summary["splits"].values())
    rows_written = sum(s["rows"] for s in summary["splits"].values())
    assert (parsed, rows_written) == (4, 5)
    labels = {
        r["id"]: r["teacher_label"]
        for s in ("train", "valid")
        for r in read_jsonl(tmp_path / "out" / f"{s}.jsonl")
    }
    assert labels["t2"] == "bug"  # "(b)" through letter_labels
    assert summary["splits"]["test"]["teacher_accuracy"] == 1.0
