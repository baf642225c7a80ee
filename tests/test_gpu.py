"""GPU-marked tests: run by ``benchmarks/gpu_check.sh`` (``pytest -m gpu``) on a machine
with CUDA; skipped everywhere else. Tiny students: the device path, not speed."""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def tiny_run(tmp_path, tiny_causal, device: str, bf16: bool | None):
    from test_pinned import write_task

    from stepdistill.config import make_config
    from stepdistill.io import read_jsonl
    from stepdistill.train import train

    task = write_task(tmp_path / device.replace(":", "-") / "task")
    metrics = train(
        make_config(
            {
                "task": str(task),
                "mode": "dss",
                "student": str(tiny_causal),
                "annotations": str(task.parent / "annotations"),
                "max_steps": 4,
                "batch_size": 4,
                "learning_rate": 3e-3,
                "bf16": bf16,
                "device": device,
                "threads": 1,
                "output_dir": str(tmp_path / device.replace(":", "-") / "runs"),
            }
        ),
        quiet=True,
    )
    return metrics, [row["loss"] for row in read_jsonl(f"{metrics['run_dir']}/train_log.jsonl")]


def test_training_on_the_gpu_matches_the_cpu_in_fp32(tmp_path, tiny_causal):
    gpu_metrics, gpu = tiny_run(tmp_path, tiny_causal, "cuda", False)
    _, cpu = tiny_run(tmp_path, tiny_causal, "cpu", False)
    assert gpu_metrics["device"].startswith("cuda") and gpu_metrics["precision"] == "fp32"
    assert gpu == pytest.approx(cpu, rel=1e-3)  # TF32 matmuls: a little looser than fp32


def test_bf16_autocast_training_stays_close_and_a_student_answers_on_the_gpu(tmp_path, tiny_causal):
    from stepdistill.student import Student

    metrics, gpu = tiny_run(tmp_path, tiny_causal, "cuda", None)
    _, cpu = tiny_run(tmp_path, tiny_causal, "cpu", False)
    assert metrics["precision"] in ("bf16", "fp16")
    assert gpu == pytest.approx(cpu, rel=3e-2)
    student = Student.load(metrics["run_dir"], device="cuda")
    assert student.model.device.type == "cuda"
    answers = student.predict(["Luke scored 3 points and 2 more. How many points?"])
    scores = student.score_candidates(["x"], [["( 3 + 2 )", "( 3 - 2 )"]])
    assert len(answers) == 1 and len(scores[0]) == 2
