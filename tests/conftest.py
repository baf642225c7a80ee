"""Offline fixtures: tiny randomly-initialised students built from a config, a tiny
BPE tokenizer trained on the spot, and temporary folders for all state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STEPDISTILL_DATA", REPO.parent / "shared" / "data"))


def byte_level_bpe(texts: list[str], special_tokens: list[str]):
    """A 400-token byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def tiny_tokenizer():
    from transformers import PreTrainedTokenizerFast

    texts = [
        "[label] [rationale] Answer: The answer is ( 84.0 / 2.0 ) 0 1 2 3 4 5 6 7 8 9 + - * / ( ) .",
        "entailment neutral contradiction premise hypothesis question choices",
        "Luke scored 84 points after playing 2 rounds of a trivia game. How many points did he score per round?",
    ] * 20
    tokenizer = byte_level_bpe(texts, ["<pad>", "</s>", "<unk>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def save_tiny(kind: str, folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    if kind == "causal":
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            bos_token_id=None,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(config)
    else:
        config = T5Config(
            vocab_size=vocab,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
        )
        model = T5ForConditionalGeneration(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory) -> Path:
    return save_tiny("causal", tmp_path_factory.mktemp("tiny-causal"))


@pytest.fixture(scope="session")
def tiny_seq2seq(tmp_path_factory) -> Path:
    return save_tiny("seq2seq", tmp_path_factory.mktemp("tiny-t5"))


@pytest.fixture(scope="session")
def tiny_student(tiny_causal, tmp_path_factory):
    """A Student over a run folder named ``run`` that holds the tiny causal model (the
    serve tests' model; each test module's server uses it in turn)."""
    from tiny_run import make_run

    from stepdistill.student import Student

    return Student.load(make_run(tiny_causal, tmp_path_factory.mktemp("student") / "run"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "dss").is_dir():
        pytest.skip(f"benchmark data not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def annotations(data_dir, tmp_path_factory) -> Path:
    """SVAMP annotated by the PaLM replay teacher (read only: training reads it)."""
    from stepdistill.annotate import annotate

    folder = tmp_path_factory.mktemp("annotations")
    annotate("svamp", "palm-replay", folder, data=data_dir, quiet=True)
    return folder
