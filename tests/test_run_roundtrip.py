"""train -> run folder -> evaluate, through the real CLI, on a tiny student."""

import json
from pathlib import Path

import pytest
from tiny_run import train_command

from stepdistill.cli import main


@pytest.mark.parametrize("mode", ["dss", "single"])
def test_train_then_evaluate_recomputes_the_same_metrics(
    tiny_causal, annotations, data_dir, tmp_path, mode, capsys
):
    args = train_command(
        tiny_causal,
        annotations,
        tmp_path / "runs",
        mode=mode,
        data_dir=data_dir,
        run_name="r",
        max_steps=3,
        batch_size=4,
        eval_limit=6,
        max_rationale_tokens=16,
    )
    assert main(args) == 0
    run = tmp_path / "runs" / "r"
    for name in (
        "config.yaml",
        "task.yaml",
        "metrics.json",
        "train_log.jsonl",
        "predictions/test.jsonl",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_examples"] == 6 and metrics["steps"] == 3 and metrics["mode"] == mode
    assert main(["evaluate", str(run), "--limit", "6"]) == 0
    result = json.loads((run / "eval" / "test-metrics.json").read_text())
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"])
    stored = [
        json.loads(x)["prediction"]
        for x in (run / "predictions" / "test.jsonl").read_text().splitlines()
    ]
    again = [
        json.loads(x)["prediction"] for x in (run / "eval" / "test.jsonl").read_text().splitlines()
    ]
    assert stored == again
    # A second run with the same name gets a new folder: nothing is overwritten.
    assert main(args) == 0
    assert (tmp_path / "runs" / "r-2" / "metrics.json").is_file()
    assert json.loads((run / "metrics.json").read_text()) == metrics


def test_saved_model_loads_with_plain_transformers(tiny_seq2seq, annotations, data_dir, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    assert (
        main(
            train_command(
                tiny_seq2seq,
                annotations,
                tmp_path,
                data_dir=data_dir,
                run_name="t5",
                max_steps=2,
                batch_size=4,
                eval_limit=4,
            )
        )
        == 0
    )
    AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "t5" / "model")
    AutoTokenizer.from_pretrained(tmp_path / "t5" / "model")


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--task", "nope"], "choose one of"),
        (["train", "--mode", "magic"], "standard, distill, dss, single"),
        (["train", "--student", "not-a-model", "--max-steps", "1"], "smollm2-135m"),
        (["annotate", "--teacher", "oracle"], "palm-replay"),
    ],
)
def test_bad_choices_list_the_valid_ones(args, message, capsys, tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEPDISTILL_DATA", str(data_dir))
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_existing_run_folder_is_not_touched(tmp_path):
    from stepdistill.io import new_run_dir

    first = new_run_dir(tmp_path, "x")
    (first / "keep.txt").write_text("precious")
    second = new_run_dir(tmp_path, "x")
    assert second != first and (first / "keep.txt").read_text() == "precious"
    assert Path(second).name == "x-2"
