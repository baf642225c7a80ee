"""int8 weights for CPU decoding (issue 28): close to the bf16 model where they are used
(a pass over a few token rows), the bf16 weights themselves elsewhere; Student, predict."""

import json

import torch
from tiny_run import make_run

from stepdistill.cli import main
from stepdistill.inference import INT8_MAX_ROWS, cast_parameters, int8_weights
from stepdistill.models import load_student
from stepdistill.student import Student


def test_int8_layers_decode_close_to_bf16_and_leave_long_passes_to_bf16(tiny_causal):
    model, _ = load_student(str(tiny_causal))
    model.eval()
    cast_parameters(model, torch.bfloat16)
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    short = torch.tensor([[5, 17, 33]])  # 3 rows: the int8 kernel
    long = torch.arange(5, 5 + 4 * INT8_MAX_ROWS).unsqueeze(0)  # more rows: bf16
    with torch.no_grad():
        short_bf16, long_bf16 = model(input_ids=short).logits, model(input_ids=long).logits
        assert int8_weights(model) == linears  # every linear layer, the LM head included
        short_int8, long_int8 = model(input_ids=short).logits, model(input_ids=long).logits
    assert torch.equal(long_int8, long_bf16)
    assert not torch.equal(short_int8, short_bf16)  # the int8 kernel really ran
    error = (short_int8.float() - short_bf16.float()).norm() / short_bf16.float().norm()
    assert error < 0.05


def test_student_and_predict_with_int8(tiny_causal, tmp_path):
    folder = make_run(tiny_causal, tmp_path / "run")
    inputs = ["premise: a man plays\nhypothesis: someone plays", "premise: x\nhypothesis: y"]
    student = Student.load(folder, int8=True)  # the run's own precision (fp32 here)
    assert student.model.lm_head.__class__.__name__ == "Int8LinearImpl"
    answers = student.predict(inputs)
    assert len(answers) == 2 and all(isinstance(a.label, str) for a in answers)
    records = tmp_path / "in.jsonl"
    records.write_text(
        json.dumps({"id": "a", "premise": "a man plays", "hypothesis": "someone plays"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    assert (
        main(["predict", str(folder), "--input", str(records), "--output", str(out), "--int8"]) == 0
    )
    assert len(out.read_text().splitlines()) == 1
