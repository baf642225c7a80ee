"""The hf backend on tiny randomly-initialised models (causal and seq2seq)."""

from __future__ import annotations

import pytest
from teacher_helpers import make_toy_task

from stepdistill.annotate import annotate, make_requests
from stepdistill.data import load_splits
from stepdistill.tasks import load_task
from stepdistill.teachers import load_teacher


@pytest.mark.parametrize("fixture", ["tiny_causal", "tiny_seq2seq"])
def test_hf_teacher_generates_in_batches_with_exact_usage(tmp_path, request, fixture):
    model = request.getfixturevalue(fixture)
    task = load_task(make_toy_task(tmp_path, count=5))
    teacher = load_teacher("hf", task, model=str(model), batch_size=2, max_tokens=6)
    requests = make_requests(task, load_splits(task)["train"])
    completions = list(teacher.complete(requests))
    assert sorted(c.request.example.id for c in completions) == sorted(
        r.example.id for r in requests
    )
    assert all(isinstance(c.text, str) and c.error is None for c in completions)
    assert all(
        0 < c.usage["completion_tokens"] <= 6 and c.usage["prompt_tokens"] > 10 for c in completions
    )
    # Greedy: the same prompts give the same texts.
    again = {c.request.example.id: c.text for c in teacher.complete(requests)}
    assert again == {c.request.example.id: c.text for c in completions}


def test_hf_teacher_through_annotate_is_stored_and_resumed(tmp_path, tiny_causal):
    task = make_toy_task(tmp_path, count=3)
    options = {"model": str(tiny_causal), "max_tokens": 4}
    first = annotate(
        str(task), "hf", tmp_path / "out", splits=("train",), quiet=True, teacher_options=options
    )
    second = annotate(
        str(task), "hf", tmp_path / "out", splits=("train",), quiet=True, teacher_options=options
    )
    assert first["store"]["asked"] == 3 and second["store"] == {
        **second["store"],
        "asked": 0,
        "answered_from_store": 3,
    }
    assert first["splits"] == second["splits"]


def test_estimate_counts_with_the_models_own_tokenizer(tmp_path, tiny_causal):
    from transformers import AutoTokenizer

    task_path = make_toy_task(tmp_path, count=3)
    estimate = annotate(
        str(task_path),
        "hf",
        tmp_path / "out",
        splits=("train",),
        quiet=True,
        estimate=True,
        teacher_options={"model": str(tiny_causal), "max_tokens": 4},
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal)
    task = load_task(task_path)
    expected = sum(
        len(tokenizer.encode(r.prompt)) for r in make_requests(task, load_splits(task)["train"])
    )
    assert estimate["splits"]["train"]["prompt_tokens"] == expected
    assert estimate["splits"]["train"]["completion_tokens_max"] == 4 * 3
    assert not (tmp_path / "out" / "train.jsonl").exists()
