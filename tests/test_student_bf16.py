"""A bf16 student runs on bf16 weights (cast once at load), not autocast over fp32."""

from __future__ import annotations

from tiny_run import make_run

from stepdistill.student import Student

INPUTS = ["premise: a man plays\nhypothesis: someone plays", "Luke scored 84 points"]


def test_bf16_student_casts_its_weights_once_and_still_answers(tiny_causal, tmp_path):
    import torch

    run = make_run(tiny_causal, tmp_path / "run")
    assert Student.load(run).model.dtype == torch.float32  # the tiny run is fp32
    student = Student.load(run, bf16=True)
    assert student.model.dtype == torch.bfloat16
    # Parameters only: float buffers (the rotary inverse frequencies) keep their precision.
    buffers = [b for b in student.model.buffers() if b.is_floating_point()]
    assert buffers and all(b.dtype == torch.float32 for b in buffers)
    assert [type(p.raw) for p in student.predict(INPUTS, rationale=True)] == [str, str]
