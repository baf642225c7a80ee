"""Validation during training: early_stopping_patience stops after that many validation
evaluations in a row without a better accuracy (keeping the best weights); valid_limit
validates on a fixed subset."""

import importlib
import json

import pytest
from tiny_run import train_command

from stepdistill.cli import main
from stepdistill.config import ConfigError, make_config

# The module (``stepdistill.train`` on the package is the function).
train_module = importlib.import_module("stepdistill.train")


def scripted_validation(monkeypatch, accuracies):
    """Validation accuracies in the given order (a tiny random model scores 0 throughout);
    the test split is evaluated for real."""
    real = train_module.evaluate_split
    script = iter(accuracies)

    def evaluate_split(model, tokenizer, task, config, examples, *args, **kwargs):
        if examples[0].split == "valid":
            return next(script), []
        return real(model, tokenizer, task, config, examples, *args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_split", evaluate_split)


@pytest.mark.parametrize("patience, steps, best_step", [(2, 4, 2), (0, 6, 5)])
def test_training_stops_after_patience_evaluations_without_improvement(
    monkeypatch, tiny_causal, annotations, data_dir, tmp_path, patience, steps, best_step
):
    # A tie (0.3 after 0.3) is no improvement: with patience 2, step 3 and 4 fail to beat step 2.
    scripted_validation(monkeypatch, [0.1, 0.3, 0.2, 0.3, 0.5, 0.4])
    arguments = train_command(
        tiny_causal,
        annotations,
        tmp_path / "runs",
        data_dir=data_dir,
        run_name="run",
        max_steps=6,
        batch_size=2,
        train_limit=4,
        evals_per_epoch=2,
        eval_limit=2,
        early_stopping_patience=patience,
    )
    assert main(arguments) == 0
    run = tmp_path / "runs" / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == steps and metrics["best_step"] == best_step
    assert [h["step"] for h in metrics["valid_history"]] == list(range(1, steps + 1))
    assert metrics.get("stopped_early", False) == (patience > 0)
    assert len((run / "train_log.jsonl").read_text().splitlines()) == steps
    assert (run / "model" / "model.safetensors").is_file() and not (run / "checkpoint").exists()


def test_patience_cannot_be_negative():
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        make_config({"early_stopping_patience": -1})


def test_valid_limit_caps_validation_and_keeps_the_test_set_whole(
    monkeypatch, tiny_causal, annotations, data_dir, tmp_path
):
    seen = {}

    def evaluate_split(model, tokenizer, task, config, examples, *args, **kwargs):
        seen.setdefault(examples[0].split, set()).add(tuple(e.id for e in examples))
        return 0.0, []

    monkeypatch.setattr(train_module, "evaluate_split", evaluate_split)
    arguments = train_command(
        tiny_causal,
        annotations,
        tmp_path / "runs",
        mode="standard",
        data_dir=data_dir,
        run_name="run",
        max_steps=2,
        batch_size=2,
        train_limit=4,
        evals_per_epoch=2,
        valid_limit=5,
    )
    assert main(arguments) == 0
    (valid,) = seen["valid"]  # the same five examples at every evaluation
    assert len(valid) == 5 and len(next(iter(seen["test"]))) == 200  # SVAMP's whole test split


@pytest.mark.parametrize("name", ["valid_limit", "train_limit", "eval_limit"])
def test_limits_must_be_positive(name):
    with pytest.raises(ConfigError, match=name):
        make_config({name: 0})
