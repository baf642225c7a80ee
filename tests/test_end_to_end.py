"""The real CLI on the real default student (SmolLM2-135M), with a handful of examples."""

import json
import re

import pytest

from stepdistill.cli import main


@pytest.mark.slow
def test_run_on_real_smollm2(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "run",
            "--data-dir",
            str(data_dir),
            "--train-limit",
            "8",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--eval-limit",
            "4",
            "--output-dir",
            str(tmp_path / "runs"),
            "--run-name",
            "e2e",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"teacher\s+palm-replay\s+test accuracy 77\.5%", out)  # all 200 test problems
    assert re.search(r"student\s+smollm2-135m \(dss\)\s+test accuracy \d+\.\d%", out)
    metrics = json.loads((tmp_path / "runs" / "e2e" / "metrics.json").read_text())
    assert metrics["train_examples"] == 8 and metrics["test_examples"] == 4
    config = json.loads((tmp_path / "runs" / "e2e" / "model" / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
