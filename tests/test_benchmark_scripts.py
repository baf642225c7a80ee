"""Benchmark scripts of issue 28: inference.py's latency columns (each one-at-a-time
method's wall time per written token, against the memory-bandwidth bound measured in the
run) and compare_runs.py (two runs' test predictions, problem by problem)."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from stepdistill.models import load_student


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))


def test_the_bound_reads_every_weight_matrix_once(scripts, tiny_causal):
    from inference import bandwidth_bound

    model, _ = load_student(str(tiny_causal))
    weights = sum(p.numel() for p in model.parameters() if p.dim() == 2)
    bound = bandwidth_bound(model)
    assert bound["gb_per_s"] > 0
    assert bound["bf16_mb"] == pytest.approx(2 * weights / 1e6)
    assert bound["int8_mb"] == pytest.approx(weights / 1e6)
    assert bound["bf16_ms"] == pytest.approx(2 * bound["int8_ms"])
    assert bound["bf16_ms"] == pytest.approx(2 * weights / bound["gb_per_s"] / 1e6)


def test_the_table_gives_batch_1_latency_beside_the_bound(scripts):
    from inference import table

    def row(batch, seconds, tokens):
        latency = 1000 * seconds / (10 * tokens) if batch == 1 else None
        return {
            "batch": batch,
            "examples": 10,
            "seconds": seconds,
            "examples_per_second": 10 / seconds,
            "accuracy": 0.5,
            "tokens_per_example": tokens,
            "ms_per_token": latency,
        }

    result = {
        "task": "svamp",
        "student": "tiny",
        "untrained": False,
        "max_label_tokens": 48,
        "max_rationale_tokens": 128,
        "methods": {
            "label": row(32, 1.0, 10.0),
            "label, batch 1": row(1, 4.0, 10.0),
            "rationale + label": row(32, 8.0, 100.0),
        },
        "bandwidth_bound": {
            "bf16_mb": 270.0,
            "int8_mb": 135.0,
            "gb_per_s": 30.0,
            "bf16_ms": 9.0,
            "int8_ms": 4.5,
        },
    }
    lines = table(result).splitlines()
    single = next(line for line in lines if line.startswith("| label, batch 1 |"))
    assert single.split("|")[8].strip() == "40.0"  # 4 s / (10 examples × 10 tokens)
    batched = next(line for line in lines if line.startswith("| label |"))
    assert batched.split("|")[8].strip() == "—"
    assert "9.0 ms a token for bf16 weights, 4.5 for int8" in lines[-1]


def test_compare_runs_pairs_two_runs_problem_by_problem(scripts, tmp_path):
    from compare_runs import compare

    def run(name, answers):
        folder = tmp_path / name / "predictions"
        folder.mkdir(parents=True)
        rows = [
            {"id": str(i), "gold": "1", "prediction": a, "correct": a == "1"}
            for i, a in enumerate(answers)
        ]
        (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp_path / name

    first = run("a", ["1", "1", "1", "0", "2", "1"])
    second = run("b", ["1", "0", "0", "0", "1", "1"])
    result = compare(first, second)
    assert result["problems"] == 6
    assert result["identical_predictions"] == 3  # the problems 0, 3 and 5
    assert (result["b"], result["c"]) == (2, 1)
    assert result["difference"] == pytest.approx(100 / 6)
    assert result["p"] == 1.0  # 2 against 1 discordant: nothing
    assert result["ci"][0] <= result["difference"] <= result["ci"][1]
    other = run("c", ["1", "1", "1"])
    with pytest.raises(SystemExit, match="different problems"):
        compare(first, other)
