"""A killed run resumed from its checkpoint ends with the same weights as an uninterrupted one."""

import importlib
import json
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import train_command

from stepdistill.cli import main

# The module (``stepdistill.train`` on the package is the function).
train_module = importlib.import_module("stepdistill.train")


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_resume_after_a_kill_gives_the_same_final_weights(
    request, kind, annotations, data_dir, tmp_path, monkeypatch
):
    student = request.getfixturevalue(f"tiny_{kind}")
    common = train_command(
        student,
        annotations,
        tmp_path / "runs",
        data_dir=data_dir,
        max_steps=7,
        batch_size=4,
        train_limit=12,
        eval_limit=4,
        evals_per_epoch=1,
        checkpoint_every=2,
        learning_rate="3e-3",
    )
    assert main(common + ["--run-name", "whole"]) == 0

    real_step_loss = train_module.step_loss
    calls = {"n": 0}
    clock = {"ahead": 0.0}  # the killed process's clock jumps an hour at its first step

    def killed_at_step_6(*args, **kwargs):
        calls["n"] += 1
        clock["ahead"] = 3600.0
        if calls["n"] == 6:
            raise KeyboardInterrupt  # as if killed mid-step
        return real_step_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "step_loss", killed_at_step_6)
    monkeypatch.setattr(
        train_module,
        "time",
        SimpleNamespace(time=lambda: time.time() + clock["ahead"], strftime=time.strftime),
    )
    assert main(common + ["--run-name", "killed"]) == 130
    killed = tmp_path / "runs" / "killed"
    assert (killed / "checkpoint" / "state.pt").is_file() and not (killed / "metrics.json").exists()
    monkeypatch.setattr(train_module, "step_loss", real_step_loss)
    monkeypatch.setattr(train_module, "time", time)

    assert main(["train", "--resume", str(killed)]) == 0
    whole = load_file(tmp_path / "runs" / "whole" / "model" / "model.safetensors")
    resumed = load_file(killed / "model" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    a, b = (
        json.loads((tmp_path / "runs" / n / "metrics.json").read_text())
        for n in ("whole", "killed")
    )
    assert a["valid_history"] == b["valid_history"] and a["test_accuracy"] == b["test_accuracy"]
    # the killed process's hour, up to its last checkpoint, counts in the run's wall time
    assert 3600 < b["wall_seconds"] < 3600 + 600 and a["wall_seconds"] < 600
    losses = [
        json.loads(line)["loss"] for line in (killed / "train_log.jsonl").read_text().splitlines()
    ]
    assert losses == [
        json.loads(line)["loss"]
        for line in (tmp_path / "runs" / "whole" / "train_log.jsonl").read_text().splitlines()
    ]
    assert not (killed / "checkpoint").exists()  # cleaned up once the run completed


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    assert "not a run folder" in capsys.readouterr().err
