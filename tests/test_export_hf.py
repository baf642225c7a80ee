"""export --format hf: a trained run as a Hugging Face model folder with a model card,
loaded back with plain transformers; --push-to-hub with the hub's calls mocked."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from tiny_run import TASK, make_run, train_command

from stepdistill.cli import main
from stepdistill.config import TrainConfig
from stepdistill.hub_export import card_body, default_license, front_matter
from stepdistill.run_folder import load_run, save_run_files
from stepdistill.tasks import normalize_label, task_from_dict

INPUTS = [
    "premise: a man plays a guitar\nhypothesis: a man makes music",
    "premise: two dogs run in the snow\nhypothesis: the dogs sleep",
    "premise: a woman reads\nhypothesis: someone holds a book",
    "premise: children play football in a park\nhypothesis: kids are outside",
]


def card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S)
    assert match, text[:200]
    return yaml.safe_load(match.group(1)), match.group(2)


def card_label_function(folder: Path):
    """The card's own Python snippet, run against the exported folder."""
    _, body = card(folder)
    code = re.search(r"```python\n(.*?)```", body, re.S).group(1)
    namespace: dict = {}
    exec(code.replace("PATH_OR_REPO", str(folder)), namespace)  # the card's code, verbatim
    return namespace["label"]


@pytest.fixture(scope="module")
def trained_run(tiny_causal, annotations, data_dir, tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    args = train_command(
        tiny_causal,
        annotations,
        runs,
        data_dir=data_dir,
        run_name="r",
        max_steps=3,
        batch_size=4,
        eval_limit=6,
        max_rationale_tokens=16,
        seed=3,
    )
    assert main(args) == 0
    return runs / "r"


def test_scrambled_run_exports_a_folder_plain_transformers_answers_like_student(
    tiny_causal, tmp_path, capsys
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stepdistill.student import Student

    run = make_run(tiny_causal, tmp_path / "run")  # no metrics.json: nothing measured
    out = tmp_path / "hf"
    assert main(["export", str(run), "--format", "hf", "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["test_accuracy"] is None
    for name in (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
    ):
        assert (out / name).is_file(), name
    assert not list(out.glob("*.bin"))
    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)

    label = card_label_function(out)
    task = task_from_dict(TASK)
    plain = [normalize_label(label(text), task.normalize) or None for text in INPUTS]
    student = [p.label for p in Student.load(run).predict(INPUTS)]
    assert plain == student
    assert len(set(student)) > 1  # the scrambled model answers each input differently

    meta, body = card(out)
    assert "model-index" not in meta
    assert "no measured test accuracy" in body
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["base_model"] == str(tiny_causal)
    assert meta["license"] == "other"


def test_trained_run_card_reads_metrics_and_config(trained_run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from stepdistill.student import Student

    out = tmp_path / "hf"
    args = ["export", str(trained_run), "--format", "hf", "--output", str(out)]
    assert main(args + ["--dataset", "ChilleD/SVAMP", "--license", "apache-2.0"]) == 0
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]

    meta, body = card(out)
    assert meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["ChilleD/SVAMP"]
    assert meta["tags"] == ["distilling-step-by-step", "stepdistill", "svamp", "dss"]
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["task"]["name"] == "svamp"
    assert result["dataset"]["split"] == "test"
    (metric,) = result["metrics"]
    assert metric["type"] == "accuracy"
    assert metric["value"] == metrics["test_accuracy"]
    # the body: how it was trained, from the saved config and metrics
    assert f"| training examples | {metrics['train_examples']} |" in body
    assert "| seed | 3 |" in body
    assert "| λ (rationale_weight) | 1 |" in body
    assert "3 optimizer steps (max_steps" in body
    assert "`[label] <input>`" in body
    assert "[rationale] <input>" in body
    assert "stepdistill train --config stepdistill_config.yaml" in body
    saved = yaml.safe_load((out / "stepdistill_config.yaml").read_text())
    assert saved == yaml.safe_load((trained_run / "config.yaml").read_text())
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation.get("do_sample", False) is False
    assert generation["max_new_tokens"] == 48  # SVAMP's max_label_tokens

    AutoModelForCausalLM.from_pretrained(out)
    label = card_label_function(out)
    student = Student.load(trained_run)
    texts = [
        "Luke scored 84 points after playing 2 rounds. How many points per round?",
        "There are 15 trees. Workers plant 6 more. How many trees are there now?",
    ]
    plain = [normalize_label(label(t), student.task.normalize) or None for t in texts]
    assert plain == [p.label for p in student.predict(texts)]


def test_builtin_student_names_its_hub_model(tiny_causal, tmp_path):
    run = load_run(make_run(tiny_causal, tmp_path / "run"))
    run = dataclasses.replace(run, config=dataclasses.replace(run.config, student="smollm2-135m"))
    meta = front_matter(run, {"test_accuracy": 0.5}, False, "n", ["tiny-nli"], "apache-2.0")
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.5


def test_a_gemma_student_card_names_gemma_and_its_terms(tiny_causal, tmp_path):
    run = load_run(make_run(tiny_causal, tmp_path / "run"))
    run = dataclasses.replace(run, config=dataclasses.replace(run.config, student="gemma3-270m"))
    meta = front_matter(run, {}, False, "n", ["tiny-nli"], default_license("gemma3-270m"))
    assert meta["base_model"] == "google/gemma-3-270m" and meta["license"] == "gemma"
    body = card_body(run, {}, False, "n", 8)
    assert "Gemma Terms of Use found at ai.google.dev/gemma/terms" in body


def test_seq2seq_run_is_text2text(tiny_seq2seq, tmp_path, capsys):
    from transformers import AutoModelForSeq2SeqLM

    run = tmp_path / "run"
    shutil.copytree(tiny_seq2seq, run / "model")
    config = TrainConfig(task="tiny-nli", student=str(tiny_seq2seq), bf16=False)
    save_run_files(run, config, task_from_dict(TASK))
    out = tmp_path / "hf"
    assert main(["export", str(run), "--format", "hf", "--output", str(out)]) == 0
    meta, body = card(out)
    assert meta["pipeline_tag"] == "text2text-generation"
    assert "AutoModelForSeq2SeqLM" in body
    AutoModelForSeq2SeqLM.from_pretrained(out)
    card_label_function(out)("premise: a\nhypothesis: b")  # the card's snippet runs


def test_push_to_hub_calls_only_the_mocked_api(tiny_causal, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    calls = []
    token = "hf_not_a_real_token_123"
    monkeypatch.setenv("HF_TOKEN", token)

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs, self.token))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs["repo_id"], kwargs, self.token))
        assert (Path(kwargs["folder_path"]) / "model.safetensors").is_file()
        return "commit"

    def no_network(self, *args, **kwargs):
        pytest.fail("a hub call that is not mocked")

    for name in ("whoami", "upload_file", "create_commit", "repo_exists", "model_info"):
        monkeypatch.setattr(HfApi, name, no_network)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)

    run = make_run(tiny_causal, tmp_path / "run")
    out = tmp_path / "hf"
    args = ["export", str(run), "--format", "hf", "--output", str(out)]
    assert main(args + ["--push-to-hub", "me/tiny-dss", "--private"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["url"] == "https://huggingface.co/me/tiny-dss"
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][2]["private"] is True and calls[0][2]["exist_ok"] is True
    assert all(c[1] == "me/tiny-dss" and c[3] == token for c in calls)
    for file in out.rglob("*"):
        if file.is_file():
            assert token.encode() not in file.read_bytes(), file.name
    assert "model-index" not in card(out)[0]  # no metrics.json: nothing measured
    assert "# tiny-dss" in card(out)[1]


def test_bad_input_is_one_clear_line(tiny_causal, tmp_path, capsys):
    run = make_run(tiny_causal, tmp_path / "run")
    shutil.rmtree(run / "model")
    assert main(["export", str(run), "--format", "hf", "--output", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert str(run) in error and "no trained model" in error
    assert not (tmp_path / "o").exists()

    made = make_run(tiny_causal, tmp_path / "run2")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["export", str(made), "--format", "hf", "--output", str(tmp_path / "full")]) == 2
    assert "not an empty folder" in capsys.readouterr().err

    assert main(["export", str(made), "--output", "x.jsonl", "--push-to-hub", "me/x"]) == 2
    assert "--format hf" in capsys.readouterr().err
