"""The multi-task loss and the training loop, on tiny randomly-initialised students."""

import json

import pytest
import torch
import torch.nn.functional as F

from stepdistill.config import ConfigError, make_config
from stepdistill.data import Example
from stepdistill.models import load_student
from stepdistill.modes import LABEL, RATIONALE
from stepdistill.packing import IGNORE, collate, micro_batches
from stepdistill.train import step_loss, token_losses
from stepdistill.training_data import TrainingExample, encode_example, training_examples


def examples(n=6):
    items = []
    for i in range(n):
        example = Example(
            f"e{i}",
            "train",
            f"Luke scored {84 + i} points after {2 + i % 3} rounds. How many?",
            None,
            "train",
            i,
        )
        items.append(
            TrainingExample(
                example,
                f"( {84 + i}.0 / 2.0 )",
                "He scored the points over the rounds. " * (1 + i % 3),
            )
        )
    return items


def rows_for(tokenizer, mode, seq2seq):
    config = make_config({"mode": mode})
    return [row for item in examples() for row in encode_example(tokenizer, config, item, seq2seq)]


def two_pass_loss(model, rows, pad, seq2seq, weight):
    """The reference: one padded batch per task, mean token loss each (as the paper's code)."""
    total = 0.0
    for kind, factor in ((LABEL, 1.0), (RATIONALE, weight)):
        chosen = [r for r in rows if r.kind == kind]
        if not chosen:
            continue
        batch = collate([[r] for r in chosen], pad, seq2seq)
        if seq2seq:
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
            ).logits
            loss = F.cross_entropy(
                logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE
            )
        else:
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(), ignore_index=IGNORE
            )
        total += factor * loss.item()
    return total


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("pack_length, budget", [(0, 100_000), (0, 64), (96, 100_000), (128, 200)])
def test_one_pass_loss_equals_the_two_pass_loss(request, kind, pack_length, budget):
    folder = request.getfixturevalue(f"tiny_{'causal' if kind == 'causal' else 'seq2seq'}")
    model, tokenizer = load_student(str(folder))
    model.eval()
    seq2seq = kind == "seq2seq"
    rows = rows_for(tokenizer, "dss", seq2seq)
    groups = [
        collate(g, tokenizer.pad_token_id, seq2seq)
        for g in micro_batches(rows, budget, seq2seq, pack_length)
    ]
    with torch.no_grad():
        ours = step_loss(model, groups, rationale_weight=0.7, backward=False)["loss"]
        reference = two_pass_loss(model, rows, tokenizer.pad_token_id, seq2seq, 0.7)
    assert ours == pytest.approx(reference, rel=1e-4)


def test_sparse_lm_head_equals_full_logits(tiny_causal):
    model, tokenizer = load_student(str(tiny_causal))
    rows = rows_for(tokenizer, "dss", False)
    batch = collate([[r] for r in rows], tokenizer.pad_token_id, False)
    with torch.no_grad():
        sparse, kinds_a = token_losses(model, batch, sparse_head=True)
        full, kinds_b = token_losses(model, batch, sparse_head=False)
    assert torch.allclose(sparse, full, atol=1e-5) and torch.equal(kinds_a, kinds_b)


def test_micro_batches_give_the_same_gradient_as_one_batch(tiny_causal):
    model, tokenizer = load_student(str(tiny_causal))
    rows = rows_for(tokenizer, "dss", False)

    def gradient(budget, pack):
        model.zero_grad()
        groups = [
            collate(g, tokenizer.pad_token_id, False)
            for g in micro_batches(rows, budget, False, pack)
        ]
        step_loss(model, groups, 1.0)
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    one = gradient(100_000, 0)
    assert torch.allclose(one, gradient(40, 0), atol=1e-5)
    assert torch.allclose(one, gradient(100_000, 96), atol=1e-5)


@pytest.mark.parametrize("mode", ["standard", "distill", "dss", "single"])
@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_each_mode_learns_on_a_tiny_model(request, mode, kind):
    folder = request.getfixturevalue(f"tiny_{kind}")
    model, tokenizer = load_student(str(folder))
    seq2seq = kind == "seq2seq"
    rows = rows_for(tokenizer, mode, seq2seq)
    assert {r.kind for r in rows} == ({LABEL, RATIONALE} if mode == "dss" else {LABEL})
    groups = [
        collate(g, tokenizer.pad_token_id, seq2seq) for g in micro_batches(rows, 4096, seq2seq, 128)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        losses.append(step_loss(model, groups, 1.0)["loss"])
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0]


def test_unknown_mode_lists_the_choices():
    with pytest.raises(ConfigError, match="standard, distill, dss, single"):
        make_config({"mode": "magic"})


def test_unknown_config_key_is_an_error():
    with pytest.raises(ConfigError, match="learning_rat"):
        make_config({"learning_rat": 1})


@pytest.mark.parametrize("name", ["train_limit", "eval_limit", "valid_limit"])
def test_a_limit_under_1_is_an_error_but_null_is_no_limit(name):
    with pytest.raises(ConfigError, match=f"{name} must be >= 1"):
        make_config({name: 0})
    assert getattr(make_config({name: None}), name) is None


def test_single_target_holds_rationale_then_label(tiny_causal):
    _, tokenizer = load_student(str(tiny_causal))
    (row,) = encode_example(tokenizer, make_config({"mode": "single"}), examples(1)[0], False)
    text = tokenizer.decode(row.target, skip_special_tokens=True)
    assert text.startswith("He scored") and text.endswith("Answer: ( 84.0 / 2.0 )")


def test_rationale_weight_scales_only_the_rationale_term(tiny_causal):
    model, tokenizer = load_student(str(tiny_causal))
    rows = rows_for(tokenizer, "dss", False)
    groups = [
        collate(g, tokenizer.pad_token_id, False) for g in micro_batches(rows, 4096, False, 0)
    ]
    with torch.no_grad():
        a = step_loss(model, groups, 0.0, backward=False)
        b = step_loss(model, groups, 2.0, backward=False)
    assert a["loss"] == pytest.approx(a["label_loss"], rel=1e-5)
    assert b["loss"] == pytest.approx(b["label_loss"] + 2 * b["rationale_loss"], rel=1e-5)
    assert json.dumps(b)  # plain floats, loggable


def test_rationale_input_puts_the_rationale_in_the_input(data_dir):
    from stepdistill.data import load_splits
    from stepdistill.tasks import load_task
    from stepdistill.training_data import training_examples

    task = load_task("svamp")
    example = load_splits(task, data_dir)["train"][0]
    note = {"teacher_label": "(1 + 1)", "rationale": "Because two."}
    items, _ = training_examples(
        make_config({"mode": "rationale-input"}), [example], {example.id: note}, task
    )
    assert (
        items[0].example.input.endswith("\nRationale: Because two.") and items[0].rationale is None
    )
    assert items[0].label == example.label  # gold label by default


def test_human_rationales_come_from_the_dataset(data_dir):
    from stepdistill.data import load_splits
    from stepdistill.tasks import load_task
    from stepdistill.training_data import training_examples

    task = load_task("cqa")
    example = load_splits(task, data_dir)["train"][0]
    items, _ = training_examples(
        make_config({"mode": "dss", "task": "cqa", "rationale_source": "human"}),
        [example],
        {},
        task,
    )
    assert items[0].rationale == example.record["abstractive_explanation"].strip()
    with pytest.raises(ValueError, match="no human rationales"):
        training_examples(
            make_config({"mode": "dss", "rationale_source": "human"}),
            [example],
            {},
            load_task("svamp"),
        )


def test_extra_unlabeled_inputs_train_on_teacher_labels(tmp_path):
    from stepdistill.tasks import load_task
    from stepdistill.training_data import extra_examples, training_examples

    path = tmp_path / "extra.jsonl"
    path.write_text(
        json.dumps(
            {
                "id": "a",
                "input": "Tom has 3 apples.",
                "teacher_label": "(3 + 0)",
                "rationale": "He has 3.",
            }
        )
        + "\n"
        + json.dumps({"id": "b", "input": "?", "teacher_label": None, "rationale": None})
        + "\n"
    )
    config = make_config({"mode": "dss", "extra_annotations": str(path)})
    extra = extra_examples(config)
    items, skipped = training_examples(
        config, extra, {e.id: e.record for e in extra}, load_task("svamp")
    )
    assert [(i.example.id, i.label, i.rationale) for i in items] == [
        ("extra-a", "(3 + 0)", "He has 3.")
    ]
    assert skipped["no_label"] == 1


def test_more_rationales_add_rationale_rows_and_keep_one_label_row(tmp_path, tiny_causal):
    from test_pinned import write_task

    from stepdistill.tasks import load_task
    from stepdistill.training_data import training_annotations

    task_path = write_task(tmp_path / "task")
    second = tmp_path / "second"
    second.mkdir()
    rows = [
        json.loads(line)
        for line in (tmp_path / "task" / "annotations" / "train.jsonl").read_text().splitlines()
    ]
    for row in rows:
        row["rationale"] = "Another teacher: " + row["rationale"]
    (second / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    values = {"task": str(task_path), "annotations": str(tmp_path / "task" / "annotations")}
    config = make_config({**values, "mode": "dss", "more_rationales": str(second)})
    task = load_task(str(task_path))
    from stepdistill.data import load_splits

    train_split = load_splits(task)["train"]
    items, _ = training_examples(config, train_split, training_annotations(config, task), task)
    _, tokenizer = load_student(str(tiny_causal))
    encoded = encode_example(tokenizer, config, items[0], False)
    assert [row.kind for row in encoded] == [LABEL, RATIONALE, RATIONALE]
    assert items[0].more_rationales[0].startswith("Another teacher: ")
    # with the filter, a wrong teacher's rationales go from both sources
    filtered = make_config(
        {**values, "mode": "dss", "more_rationales": str(second), "rationale_filter": True}
    )
    items, skipped = training_examples(
        filtered, train_split, training_annotations(filtered, task), task
    )
    wrong = [i for i in items if i.rationale is None]
    assert (
        wrong
        and all(i.more_rationales == () for i in wrong)
        and skipped["no_rationale"] == len(wrong)
    )
    with pytest.raises(ValueError, match="more_rationales needs a mode with a rationale task"):
        training_examples(
            make_config({**values, "mode": "single", "more_rationales": str(second)}),
            train_split,
            {},
            task,
        )


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_label_first_split_feeds_the_label_tokens_to_l_label_and_the_rest_to_l_rationale(
    request, kind
):
    from stepdistill.packing import target_tokens

    model, tokenizer = load_student(str(request.getfixturevalue(f"tiny_{kind}")))
    seq2seq = kind == "seq2seq"
    config = make_config({"mode": "label-first-split"})
    item = examples(1)[0]
    (row,) = encode_example(tokenizer, config, item, seq2seq)
    labelled = row.kinds().count(LABEL)
    assert row.kinds() == [LABEL] * labelled + [RATIONALE] * (len(row.target) - labelled)
    assert tokenizer.decode(row.target[:labelled]).strip() == item.label
    assert "Because:" in tokenizer.decode(row.target[labelled:])
    # the same tokens as label-first's one target, only their loss terms differ
    (plain,) = encode_example(tokenizer, make_config({"mode": "label-first"}), item, seq2seq)
    assert plain.target == row.target and set(plain.kinds()) == {LABEL}
    rows = [r for it in examples() for r in encode_example(tokenizer, config, it, seq2seq)]
    groups = [
        collate(g, tokenizer.pad_token_id, seq2seq) for g in micro_batches(rows, 4096, seq2seq, 128)
    ]
    counts = (
        sum(r.kinds().count(LABEL) for r in rows),
        sum(r.kinds().count(RATIONALE) for r in rows),
    )
    assert target_tokens(groups) == counts and counts[1] > 0
