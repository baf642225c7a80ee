"""The device plumbing, on the CPU: the ``auto`` decision, explicit devices, the one-line
errors for devices this machine lacks, and the CUDA-only branches as far as they can be
exercised without a GPU (a machine with GPUs is simulated where only counts matter)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from stepdistill import device as devices
from stepdistill.config import ConfigError, make_config
from stepdistill.device import DeviceError, resolve_device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine with two GPUs, as far as resolving a device setting asks."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    monkeypatch.setattr(devices, "mps_available", lambda: False)


def test_auto_is_the_cpu_without_a_gpu_and_cpu_is_always_there(no_gpu):
    assert resolve_device("auto") == "cpu" and resolve_device(None) == "cpu"
    assert resolve_device("cpu") == "cpu" and resolve_device(" CPU ") == "cpu"


def test_a_missing_device_is_a_one_line_error_naming_what_there_is(no_gpu):
    with pytest.raises(
        DeviceError, match=r"device cuda: this machine has no CUDA device .*available: cpu$"
    ):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="device mps: this machine has no MPS device"):
        resolve_device("mps")
    with pytest.raises(DeviceError, match="unknown device 'gpu'; choose one of auto, cpu, cuda"):
        resolve_device("gpu")


def test_auto_and_cuda_pick_this_process_gpu_and_a_gpu_index_must_exist(two_gpus, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert resolve_device("auto") == "cuda:0" and resolve_device("cuda:1") == "cuda:1"
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of a launch on this node
    assert resolve_device("auto") == "cuda:1" and resolve_device("cuda") == "cuda:1"
    with pytest.raises(
        DeviceError,
        match=r"device cuda:7: this machine has 2 CUDA device\(s\); available: cpu, cuda:0 \(Test GPU\), cuda:1 \(Test GPU\)",
    ):
        resolve_device("cuda:7")


def test_precision_per_device(monkeypatch, two_gpus):
    monkeypatch.setattr(devices, "bf16_supported", lambda device="cpu": device == "cpu")
    # A GPU without bf16: auto trains in fp16 with a gradient scaler; forcing bf16 is an error.
    assert devices.training_precision(None, "cuda:0") == "fp16"
    assert devices.training_precision(False, "cuda:0") == "fp32"
    with pytest.raises(
        DeviceError, match="bf16 was asked for on cuda:0 \\(Test GPU\\), which has no bf16"
    ):
        devices.training_precision(True, "cuda:0")
    # The CPU: bf16 where it has it, never fp16.
    assert devices.training_precision(None, "cpu") == "bf16"
    assert devices.training_precision(False, "cpu") == "fp32"
    monkeypatch.setattr(devices, "bf16_supported", lambda device="cpu": True)
    assert devices.training_precision(None, "cuda:1") == "bf16"


def test_cuda_only_branches_stay_off_on_the_cpu():
    assert isinstance(devices.training_autocast("cpu", "bf16"), contextlib.nullcontext)
    assert isinstance(devices.training_autocast("cuda:0", "fp32"), contextlib.nullcontext)
    assert devices.gradient_scaler("bf16") is None and devices.gradient_scaler("fp32") is None
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "tokens": 6}
    assert devices.to_device(batch, "cpu") is batch  # no copy on the CPU
    if not torch.cuda.is_available():
        autocast = devices.training_autocast("cuda:0", "fp16")
        assert isinstance(autocast, torch.autocast) and autocast.fast_dtype == torch.float16


def test_the_config_and_the_cli_refuse_an_unknown_or_missing_device(no_gpu, tmp_path, capsys):
    from stepdistill.cli import main

    assert make_config({"device": "cuda:3"}).device == "cuda:3"  # checked when used
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        make_config({"device": "tpu"})
    code = main(["evaluate", str(tmp_path), "--device", "cuda"])
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1
    assert "no such" in error or "not a run folder" in error  # the folder is checked first
    run = tmp_path / "run"
    run.mkdir()
    from tiny_run import TASK

    from stepdistill.config import TrainConfig
    from stepdistill.run_folder import save_run_files
    from stepdistill.tasks import task_from_dict

    save_run_files(run, TrainConfig(task="tiny-nli"), task_from_dict(TASK))
    (run / "model").mkdir()
    code = main(
        [
            "predict",
            str(run),
            "--input",
            str(tmp_path / "x.jsonl"),
            "--output",
            str(tmp_path / "o.jsonl"),
            "--device",
            "cuda",
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and "device cuda: this machine has no CUDA device" in error
    assert len(error.strip().splitlines()) == 1


def test_training_on_an_explicit_cpu_device_records_it(tiny_causal, tmp_path):
    from test_pinned import write_task

    from stepdistill.train import train

    task = write_task(tmp_path / "task")
    metrics = train(
        make_config(
            {
                "task": str(task),
                "mode": "dss",
                "student": str(tiny_causal),
                "annotations": str(tmp_path / "task" / "annotations"),
                "max_steps": 1,
                "batch_size": 4,
                "bf16": False,
                "device": "cpu",
                "output_dir": str(tmp_path / "runs"),
            }
        ),
        quiet=True,
    )
    assert metrics["device"] == "cpu" and metrics["precision"] == "fp32"


class Chosen(Exception):
    """Raised by a stand-in resolve_device: which device setting train() asked for."""


def test_a_resumed_run_keeps_its_device_unless_another_is_asked_for(tmp_path, monkeypatch):
    import importlib

    from tiny_run import TASK

    from stepdistill.config import TrainConfig
    from stepdistill.run_folder import save_run_files
    from stepdistill.tasks import task_from_dict

    def resolve(setting):
        raise Chosen(setting)

    module = importlib.import_module("stepdistill.train")  # the module, not the function
    monkeypatch.setattr(module, "resolve_device", resolve)
    save_run_files(tmp_path, TrainConfig(task="tiny-nli", device="cpu"), task_from_dict(TASK))
    with pytest.raises(Chosen, match="^cpu$"):
        module.train(TrainConfig(), resume=tmp_path)  # the saved run's device
    with pytest.raises(Chosen, match="^cuda:1$"):
        module.train(TrainConfig(), resume=tmp_path, device="cuda:1")


def test_a_sweep_annotates_before_a_run_that_needs_the_teacher(tmp_path, monkeypatch):
    from tiny_run import write_sweep

    from stepdistill.sweep import sweep

    calls = []
    monkeypatch.setattr(
        "stepdistill.sweep.ensure_annotations", lambda c, t: calls.append(("annotate", c.mode))
    )
    monkeypatch.setattr("stepdistill.sweep.teacher_test_accuracy", lambda c, t: None)

    def fake_train(config, **_):
        calls.append(("train", config.mode))
        return {
            "task": "svamp",
            "test_accuracy": 0.5,
            "valid_accuracy": 0.5,
            "train_examples": 1,
            "steps": 1,
            "best_step": 1,
            "run_dir": str(tmp_path),
            "wall_seconds": 1.0,
        }

    monkeypatch.setattr("stepdistill.sweep.train", fake_train)
    sweep(write_sweep(tmp_path, {"mode": ["dss", "standard"]}))
    assert calls == [("annotate", "dss"), ("train", "dss"), ("train", "standard")]
