"""LoRA (``lora_rank`` > 0): only the adapters train, and the run folder holds a plain
transformers model with the adapters merged in."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import scramble, train_command

from stepdistill.cli import main
from stepdistill.config import ConfigError, make_config
from stepdistill.data import Example
from stepdistill.lora import apply_lora
from stepdistill.master_weights import MasterWeights
from stepdistill.models import load_student
from stepdistill.packing import collate, micro_batches
from stepdistill.train import step_loss
from stepdistill.training_data import TrainingExample, encode_example

pytest.importorskip("peft")


def rows(tokenizer):
    config = make_config({"mode": "dss"})
    items = [
        TrainingExample(
            Example(
                f"e{i}",
                "train",
                f"Luke scored {84 + i} points after {2 + i} rounds. How many?",
                None,
                "train",
                i,
            ),
            f"( {84 + i}.0 / {2 + i}.0 )",
            "He scored the points over the rounds. " * (1 + i % 2),
        )
        for i in range(4)
    ]
    return [row for item in items for row in encode_example(tokenizer, config, item, False)]


def test_only_the_adapters_get_gradients_and_the_merged_model_computes_the_same(
    tiny_causal, tmp_path
):
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_student(str(tiny_causal))
    config = make_config(
        {"lora_rank": 4, "lora_alpha": 8, "lora_target_modules": "q_proj,v_proj,down_proj"}
    )
    wrapper = apply_lora(model, config)
    groups = [
        collate(g, tokenizer.pad_token_id, False)
        for g in micro_batches(rows(tokenizer), 4096, False, 128)
    ]
    weights = MasterWeights(model, enabled=True)  # bf16 compute, as training runs by default
    assert weights.named and all(
        ".lora_A." in name or ".lora_B." in name for name, _ in weights.named
    )
    assert {name.split(".")[-4] for name, _ in weights.named} == {"q_proj", "v_proj", "down_proj"}
    optimizer = torch.optim.AdamW(weights.master, lr=1e-2)
    for _ in range(3):
        step_loss(model, groups, 1.0)
        for name, p in model.named_parameters():
            assert (p.grad is not None) == p.requires_grad, (
                name
            )  # frozen base weights get no gradient
        weights.gradients_to_master()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        weights.master_to_model()

    weights.restore(model, weights.snapshot())  # fp32 again, as before saving
    batch = collate([[r] for r in rows(tokenizer)], tokenizer.pad_token_id, False)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        adapted = model(**inputs).logits
    merged = wrapper.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "merged"
    )  # plain transformers, no peft
    with torch.no_grad():
        assert torch.allclose(reloaded(**inputs).logits, adapted, atol=1e-4)
    with torch.no_grad():
        original = load_student(str(tiny_causal))[0](**inputs).logits
    assert float((adapted - original).abs().max()) > 1e-3  # the adapters did something


def test_a_lora_run_saves_a_plain_merged_model_that_loads_and_predicts(
    tiny_causal, annotations, data_dir, tmp_path
):
    from stepdistill.student import Student

    # Large random weights: the tiny model's default init answers EOS at once, and the
    # check below needs real answers to compare.
    student = tmp_path / "student"
    shutil.copytree(tiny_causal, student)
    scramble(student)
    assert (
        main(
            train_command(
                student,
                annotations,
                tmp_path / "runs",
                data_dir=data_dir,
                run_name="lora",
                max_steps=3,
                batch_size=4,
                train_limit=8,
                eval_limit=4,
                learning_rate="1e-2",
                lora_rank=4,
                lora_target_modules="q_proj,v_proj",
            )
        )
        == 0
    )
    run = tmp_path / "runs" / "lora"
    start, saved = (
        load_file(student / "model.safetensors"),
        load_file(run / "model" / "model.safetensors"),
    )
    assert saved.keys() == start.keys()  # the same tensors as the base model: no adapter left in it
    for name in start:
        changed = not torch.equal(saved[name], start[name])
        # The adapters merged into q/v; every other weight is the base weight, bit for bit
        # (bf16 training keeps an fp32 copy of the frozen weights for the save).
        assert changed == (name.endswith(("q_proj.weight", "v_proj.weight"))), name

    written = [
        json.loads(line) for line in (run / "predictions" / "test.jsonl").read_text().splitlines()
    ]
    # The saved model is the trained one: reloaded (as a Student, in the precision policy
    # training's test used), it gives the recorded answers.
    again = Student.load(run).predict([row["input"] for row in written])
    assert any(row["raw"] for row in written)
    assert [p.raw for p in again] == [row["raw"] for row in written]


def test_lora_settings_are_checked():
    with pytest.raises(ConfigError, match="lora_rank"):
        make_config({"lora_rank": -1})
    with pytest.raises(ConfigError, match="lora_target_modules"):
        make_config({"lora_rank": 4, "lora_target_modules": " , "})
