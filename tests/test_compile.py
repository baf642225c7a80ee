"""Compiled training (issue 28): the same losses as the uncompiled trainer, the same saved
model, answers from the uncompiled model; and when a run compiles by default."""

import importlib
import json

import pytest
import torch
from test_train import rows_for
from tiny_run import train_command

from stepdistill.cli import main
from stepdistill.device import additive_mask, compile_pays
from stepdistill.models import load_student
from stepdistill.packing import collate, micro_batches
from stepdistill.train import compiled_head_losses, head_losses, step_loss


def packed_groups(tokenizer):
    rows = rows_for(tokenizer, "dss", False)
    return [collate(g, tokenizer.pad_token_id, False) for g in micro_batches(rows, 4096, False, 96)]


def test_eager_attention_with_the_packing_mask_gives_the_sdpa_loss(tiny_causal):
    """Hugging Face's eager attention adds its mask to the scores: the packing's boolean
    mask is made additive, so eager and SDPA give the same loss (without the conversion
    eager attention would see across packed rows and the future)."""
    model, tokenizer = load_student(str(tiny_causal))
    model.eval()
    groups = packed_groups(tokenizer)
    assert any(g["attention_mask"].dim() == 4 for g in groups)  # really packed
    with torch.no_grad():
        sdpa = step_loss(model, groups, 1.0, backward=False)["loss"]
        model.set_attn_implementation("eager")
        eager = step_loss(model, groups, 1.0, backward=False)["loss"]
        # the raw boolean mask, as eager attention would get it unconverted
        mask = groups[0]["attention_mask"]
        assert additive_mask(model, mask).dtype == torch.float32
        raw = model(input_ids=groups[0]["input_ids"], attention_mask=mask.float()).logits
        converted = model(
            input_ids=groups[0]["input_ids"], attention_mask=additive_mask(model, mask)
        ).logits
    assert eager == pytest.approx(sdpa, rel=1e-5)
    assert not torch.allclose(raw, converted, atol=1e-3)
    model.set_attn_implementation("sdpa")
    assert additive_mask(model, mask) is mask  # SDPA takes the boolean mask as it is


def test_when_training_compiles(tiny_causal, tiny_seq2seq, monkeypatch):
    causal, _ = load_student(str(tiny_causal))
    seq2seq, _ = load_student(str(tiny_seq2seq))
    # a tiny model never repays a compile
    assert not compile_pays(None, causal, "cpu", True, False)
    assert compile_pays(True, causal, "cpu", False, False)  # forced
    assert not compile_pays(False, causal, "cpu", True, False)
    monkeypatch.setattr("stepdistill.device.COMPILE_MIN_PARAMETERS", 0)
    assert compile_pays(None, causal, "cpu", True, False)  # as a 135M student on a bf16 CPU
    assert not compile_pays(None, causal, "cpu", False, False)  # fp32: not measured
    assert not compile_pays(None, causal, "cpu", True, True)  # LoRA
    assert not compile_pays(None, causal, "cuda:0", True, False)  # a GPU: not measured
    assert not compile_pays(None, seq2seq, "cpu", True, False)


def test_a_compiled_run_trains_saves_and_answers_as_an_uncompiled_one(
    tiny_causal, annotations, data_dir, tmp_path, monkeypatch
):
    """Same data, same seed: the compiled run's losses match the uncompiled run's within
    float32 rounding (inductor reorders sums), its saved model loads as the uncompiled
    run's does (same names, same attention setting) and its test predictions come from
    the uncompiled model."""
    import stepdistill.device as device

    compiled_models = []

    def compile_and_count(model):
        compiled_models.append(model)
        device.compile_student(model)

    # (the package's ``train`` attribute is the function: patch the module)
    monkeypatch.setattr(
        importlib.import_module("stepdistill.train"), "compile_student", compile_and_count
    )
    runs = {}
    for name, compiled in (("plain", "false"), ("compiled", "true")):
        args = train_command(
            tiny_causal,
            annotations,
            tmp_path / "runs",
            data_dir=data_dir,
            run_name=name,
            max_steps=3,
            batch_size=4,
            eval_limit=6,
            max_rationale_tokens=16,
            bf16="false",
        )
        assert main([*args, f"compile={compiled}"]) == 0
        runs[name] = tmp_path / "runs" / name
    assert len(compiled_models) == 1  # the second run only
    assert compiled_models[0].config._attn_implementation == "sdpa"  # restored after training
    log = {
        name: [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        for name, run in runs.items()
    }
    losses = {name: [row["loss"] for row in rows if "loss" in row] for name, rows in log.items()}
    assert len(losses["plain"]) == 3
    assert losses["compiled"] == pytest.approx(losses["plain"], rel=1e-4)
    configs = {
        name: json.loads((run / "model" / "config.json").read_text()) for name, run in runs.items()
    }
    assert configs["compiled"] == configs["plain"]
    from safetensors.torch import load_file

    weights = {name: load_file(run / "model" / "model.safetensors") for name, run in runs.items()}
    assert weights["compiled"].keys() == weights["plain"].keys()
    for key, value in weights["plain"].items():
        assert torch.allclose(weights["compiled"][key], value, atol=1e-4), key
    # the test was answered by the uncompiled model: evaluating the saved model again
    # (uncompiled, as a reloaded Student) gives the same answers
    run = runs["compiled"]
    assert main(["evaluate", str(run), "--limit", "6"]) == 0
    stored, again = (
        [
            json.loads(x)["prediction"]
            for x in (run / folder / "test.jsonl").read_text().splitlines()
        ]
        for folder in ("predictions", "eval")
    )
    assert stored == again


def test_the_compiled_lm_head_loss_equals_the_eager_one():
    """A compiled student's LM head and its fp32 cross-entropy run as one compiled graph
    (inductor fuses the cast, the log-softmax and the target pick): the same losses and
    gradients as eager, for each number of target tokens (one graph, dynamic shapes)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    for rows in (7, 12):
        hidden = torch.randn(rows, 16, requires_grad=True)
        targets = torch.randint(0, 50, (rows,))
        results = []
        for function in (head_losses, compiled_head_losses):
            head.zero_grad()
            hidden.grad = None
            losses = function(head, hidden, targets)
            (losses * torch.arange(1.0, rows + 1)).sum().backward()
            results.append((losses.detach(), hidden.grad.clone(), head.weight.grad.clone()))
        for eager, compiled in zip(*results, strict=True):
            assert torch.allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def test_compiled_kernels_go_to_stepdistills_cache_unless_the_user_chose_one(
    tiny_causal, tmp_path, monkeypatch
):
    """Importing torch._dynamo sets TORCHINDUCTOR_CACHE_DIR to torch's /tmp default; the
    compiled student's kernels go to ~/.cache/stepdistill/inductor instead (kept between
    machines' reboots), and a directory the user set is kept."""
    import os

    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from stepdistill.device import compile_student

    monkeypatch.setenv("HOME", str(tmp_path))
    for preset, expected in (
        (default_cache_dir(), str(tmp_path / ".cache" / "stepdistill" / "inductor")),
        (str(tmp_path / "mine"), str(tmp_path / "mine")),
    ):
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", preset)
        model, _ = load_student(str(tiny_causal))
        compile_student(model)
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == expected


def test_regional_compile_compiles_each_layer_and_a_body_without_layers_whole(tiny_causal):
    from stepdistill.device import compile_student

    model, _ = load_student(str(tiny_causal))
    compile_student(model)  # regional, the default
    assert all(layer._compiled_call_impl is not None for layer in model.base_model.layers)
    assert model.base_model._compiled_call_impl is None
    whole, _ = load_student(str(tiny_causal))
    compile_student(whole, regional=False)
    assert whole.base_model._compiled_call_impl is not None
    assert all(layer._compiled_call_impl is None for layer in whole.base_model.layers)
    other, _ = load_student(str(tiny_causal))
    other.base_model.h = other.base_model.layers  # a GPT-2-style name: no ``layers`` list
    del other.base_model.layers
    compile_student(other)
    assert other.base_model._compiled_call_impl is not None
