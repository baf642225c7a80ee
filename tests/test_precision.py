"""bf16 by default only where the hardware computes it: emulated bf16 (an AVX2-only CPU)
ran matrix products over 100x slower than fp32 (benchmarks/precision.py)."""

import json
import warnings

import pytest
from tiny_run import train_command

import stepdistill.device as precision
from stepdistill.cli import main
from stepdistill.config import make_config


@pytest.fixture(params=[True, False], ids=["bf16-cpu", "no-bf16-cpu"])
def hardware(request, monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device="cpu": request.param)
    return request.param


def test_default_follows_the_hardware_and_an_explicit_choice_wins(hardware):
    assert make_config({}).bf16 is None
    assert precision.use_bf16(None) is hardware
    assert precision.use_bf16(False) is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.use_bf16(True) is True
    assert bool(caught) is (not hardware)  # forcing bf16 without hardware support warns
    if caught:
        assert "no native bf16" in str(caught[0].message)


def test_bf16_supported_answers_for_this_machine():
    assert isinstance(precision.bf16_supported(), bool)


def test_a_training_run_records_the_precision_it_used(
    hardware, tiny_causal, annotations, data_dir, tmp_path
):
    arguments = train_command(
        tiny_causal,
        annotations,
        tmp_path / "runs",
        data_dir=data_dir,
        run_name="run",
        max_steps=1,
        batch_size=2,
        train_limit=2,
        eval_limit=2,
    )
    assert main(arguments) == 0
    metrics = json.loads((tmp_path / "runs" / "run" / "metrics.json").read_text())
    assert metrics["bf16"] is hardware
