"""Candidate scoring: one packed forward pass per batch gives each candidate the same
log-likelihood as scoring it alone, and so picks the same answer."""

from __future__ import annotations

import pytest
from tiny_run import make_run, scramble

from stepdistill.data import DataError
from stepdistill.encode import encode_prompt, encode_target
from stepdistill.inference import best_candidate, score_candidates
from stepdistill.models import load_student
from stepdistill.modes import LABEL_PREFIX
from stepdistill.student import Student

INPUTS = ["premise: a man plays\nhypothesis: someone plays", "Luke scored 84 points", "x" * 50]
# Different lengths, one a prefix of another, per-input sets of different sizes.
CANDIDATES = [
    ["entailment", "neutral", "contradiction"],
    ["84", "84 / 2", "( 84.0 / 2.0 )", "points"],
    ["a", "question choices"],
]


def separate_log_likelihoods(model, tokenizer, text: str, options: list[str]) -> list[float]:
    """The obvious way: one forward pass per candidate, no padding, no mask."""
    import torch

    seq2seq = bool(model.config.is_encoder_decoder)
    prompt = encode_prompt(tokenizer, LABEL_PREFIX, text, 256, seq2seq)
    values = []
    with torch.no_grad():
        for option in options:
            target = encode_target(tokenizer, option, 64)
            if seq2seq:
                logits = model(
                    input_ids=torch.tensor([prompt]), labels=torch.tensor([target])
                ).logits[0]
            else:
                logits = model(input_ids=torch.tensor([prompt + target])).logits[
                    0, len(prompt) - 1 : -1
                ]
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            values.append(float(log_probs[torch.arange(len(target)), torch.tensor(target)].sum()))
    return values


@pytest.fixture(scope="module", params=["causal", "seq2seq"])
def model_and_tokenizer(request, tiny_causal, tiny_seq2seq, tmp_path_factory):
    import shutil

    source = tiny_causal if request.param == "causal" else tiny_seq2seq
    folder = tmp_path_factory.mktemp(f"scored-{request.param}") / "model"
    shutil.copytree(source, folder)
    if request.param == "causal":
        scramble(folder)  # large random weights: candidates get clearly different scores
    return load_student(str(folder))


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_one_pass_scores_equal_separate_log_likelihoods(model_and_tokenizer, batch_size):
    model, tokenizer = model_and_tokenizer
    packed = score_candidates(
        model, tokenizer, INPUTS, CANDIDATES, batch_size=batch_size, bf16=False
    )
    for text, options, scores in zip(INPUTS, CANDIDATES, packed, strict=True):
        expected = separate_log_likelihoods(model, tokenizer, text, options)
        assert scores == pytest.approx(expected, abs=1e-4)
        assert best_candidate(scores) == best_candidate(expected)
    # Not a vacuous check: the candidates' scores are far apart.
    assert all(max(scores) - min(scores) > 0.1 for scores in packed)


def test_an_eager_attention_student_scores_as_the_sdpa_one(model_and_tokenizer):
    """Hugging Face's eager attention adds its mask to the scores: the packed candidates'
    boolean mask is made additive for it (as a 0/1 addition it would mask nothing)."""
    model, tokenizer = model_and_tokenizer
    if model.config.is_encoder_decoder:
        pytest.skip("the seq2seq path passes plain padding masks")
    sdpa = score_candidates(model, tokenizer, INPUTS, CANDIDATES, batch_size=8, bf16=False)
    model.set_attn_implementation("eager")
    try:
        eager = score_candidates(model, tokenizer, INPUTS, CANDIDATES, batch_size=8, bf16=False)
    finally:
        model.set_attn_implementation("sdpa")
    for a, b in zip(eager, sdpa, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_mean_is_the_sum_over_the_label_and_end_tokens(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    total = score_candidates(model, tokenizer, INPUTS, CANDIDATES, bf16=False)
    mean = score_candidates(model, tokenizer, INPUTS, CANDIDATES, reduce="mean", bf16=False)
    for options, sums, means in zip(CANDIDATES, total, mean, strict=True):
        lengths = [len(encode_target(tokenizer, option, 64)) for option in options]
        assert means == pytest.approx([s / n for s, n in zip(sums, lengths, strict=True)], abs=1e-5)


def test_a_named_scoring_shows_its_progress_and_scores_the_same(model_and_tokenizer, capsys):
    model, tokenizer = model_and_tokenizer
    quiet = score_candidates(model, tokenizer, INPUTS, CANDIDATES, batch_size=2, bf16=False)
    assert "test scoring" not in capsys.readouterr().err
    shown = score_candidates(
        model, tokenizer, INPUTS, CANDIDATES, batch_size=2, bf16=False, desc="test scoring"
    )
    assert "test scoring" in capsys.readouterr().err  # a bar over its 2 batches
    assert shown == quiet


def test_bad_arguments_are_errors(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(ValueError, match="reduce"):
        score_candidates(model, tokenizer, INPUTS[:1], CANDIDATES[:1], reduce="max")
    with pytest.raises(ValueError, match="no candidates"):
        score_candidates(model, tokenizer, INPUTS[:1], [[]])
    with pytest.raises(ValueError, match="candidate lists"):
        score_candidates(model, tokenizer, INPUTS, CANDIDATES[:1])


def test_bf16_scores_pick_like_fp32_on_clear_margins(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    exact = score_candidates(model, tokenizer, INPUTS, CANDIDATES, bf16=False)
    fast = score_candidates(model, tokenizer, INPUTS, CANDIDATES, bf16=True)
    for a, b in zip(exact, fast, strict=True):
        assert b == pytest.approx(a, rel=0.05, abs=0.5)


@pytest.fixture(scope="module")
def student(tiny_causal, tmp_path_factory):
    return Student.load(make_run(tiny_causal, tmp_path_factory.mktemp("choose") / "run"))


def test_student_choose_uses_the_task_labels_or_the_record_choices(student, monkeypatch):
    # The tiny run's task is free text: give it a label set, then a choices field.
    monkeypatch.setattr(student.task, "labels", ["entailment", "neutral", "contradiction"])
    record = {"id": 1, "premise": "a man plays", "hypothesis": "someone plays"}
    picked = student.choose([record, INPUTS[1]])
    scores = student.score_candidates([record, INPUTS[1]])
    for prediction, values in zip(picked, scores, strict=True):
        assert prediction.label == student.task.labels[best_candidate(values)]
    monkeypatch.setattr(student.task, "labels", None)
    monkeypatch.setattr(student.task, "choices_field", "choices")
    choice_record = {**record, "choices": ["Yes", "No.", "Maybe so"]}
    assert student.candidates(choice_record) == ["yes", "no", "maybe so"]
    assert student.choose([choice_record])[0].label in {"yes", "no", "maybe so"}
    with pytest.raises(DataError, match="no candidate labels"):
        student.choose([INPUTS[0]])
    assert student.choose([INPUTS[0]], candidates=[["b", "a"]])[0].label in {"a", "b"}
