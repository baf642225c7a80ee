"""export --format gguf: a trained run as one GGUF file read back with the gguf package
(llama.cpp's names, hyperparameters, tokenizer, weights), an Ollama Modelfile whose
template renders our label prompt, one-line errors for what cannot be exported, and
(slow, with llama-cpp-python) llama.cpp answering like the Student."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_run import TASK, make_run

from stepdistill.cli import main
from stepdistill.config import TrainConfig
from stepdistill.encode import encode_prompt
from stepdistill.gguf_export import GGUFExportError, permute, pre_tokenizer, render_template
from stepdistill.modes import LABEL_PREFIX
from stepdistill.run_folder import save_run_files
from stepdistill.tasks import task_from_dict

INPUTS = [
    "premise: a man plays a guitar\nhypothesis: a man makes music",
    "premise: two dogs run in the snow\nhypothesis: the dogs sleep",
    "premise: a woman reads\nhypothesis: someone holds a book",
    "premise: children play football in a park\nhypothesis: kids are outside",
    "premise: Luke scored 84 points after 2 rounds\nhypothesis: Luke played a game",
    "premise: the answer is ( 84.0 / 2.0 )\nhypothesis: 42",
]

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


@pytest.fixture(scope="module")
def run(tiny_causal, tmp_path_factory) -> Path:
    return make_run(tiny_causal, tmp_path_factory.mktemp("gguf") / "run")


def fields(path: Path) -> tuple[dict, object]:
    import gguf

    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items()}, reader


def test_f16_file_holds_llamas_names_hyperparameters_tokenizer_and_weights(run, tmp_path, capsys):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "gguf"
    assert main(["export", str(run), "--format", "gguf", "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    path = Path(summary["gguf"])
    assert path == out / "run-f16.gguf" and summary["bytes"] == path.stat().st_size
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "run-f16.gguf"]

    meta, reader = fields(path)
    model = AutoModelForCausalLM.from_pretrained(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    config = model.config
    assert meta["general.architecture"] == "llama"
    assert meta["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    assert meta["llama.block_count"] == config.num_hidden_layers
    assert meta["llama.context_length"] == config.max_position_embeddings
    assert meta["llama.embedding_length"] == config.hidden_size
    assert meta["llama.feed_forward_length"] == config.intermediate_size
    assert meta["llama.attention.head_count"] == config.num_attention_heads
    assert meta["llama.attention.head_count_kv"] == config.num_key_value_heads
    assert meta["llama.rope.dimension_count"] == config.hidden_size // config.num_attention_heads
    assert meta["llama.rope.freq_base"] == pytest.approx(config.rope_parameters["rope_theta"])
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(config.rms_norm_eps)
    # the tokenizer: every id's token, in order, its merges and special ids
    vocab = tokenizer.get_vocab()
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.tokens"] == sorted(vocab, key=vocab.get)
    merges = json.loads((run / "model" / "tokenizer.json").read_text())["model"]["merges"]
    assert len(meta["tokenizer.ggml.merges"]) == len(merges)
    assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert meta["tokenizer.ggml.padding_token_id"] == tokenizer.pad_token_id
    assert meta["tokenizer.ggml.add_bos_token"] is False
    types = meta["tokenizer.ggml.token_type"]
    assert types[tokenizer.eos_token_id] == gguf.TokenType.CONTROL
    assert types[vocab["Ġhypothesis"]] == gguf.TokenType.NORMAL
    # the weights: llama.cpp's names, tied output (no output.weight), q/k permuted
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors and "token_embd.weight" in tensors
    assert len(tensors) == 2 + 9 * config.num_hidden_layers
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    state = model.state_dict()
    for name, hf, heads in (
        (
            "blk.1.attn_q.weight",
            "model.layers.1.self_attn.q_proj.weight",
            config.num_attention_heads,
        ),
        (
            "blk.1.attn_k.weight",
            "model.layers.1.self_attn.k_proj.weight",
            config.num_key_value_heads,
        ),
    ):
        expected = permute(state[hf], heads).numpy()
        stored = np.asarray(tensors[name].data, dtype=np.float32).reshape(expected.shape)
        np.testing.assert_allclose(stored, expected, rtol=1e-3, atol=1e-3)
    down = np.asarray(tensors["blk.0.ffn_down.weight"].data, dtype=np.float32)
    np.testing.assert_allclose(
        down.reshape(config.hidden_size, -1),
        state["model.layers.0.mlp.down_proj.weight"].numpy(),
        rtol=1e-3,
        atol=1e-3,
    )


@pytest.mark.parametrize(
    ("quant", "kind"),
    [("bf16", "BF16"), ("q8_0", "Q8_0")],
)
def test_quant_sets_the_matrices_type(run, tmp_path, quant, kind):
    import gguf

    out = tmp_path / quant
    assert (
        main(["export", str(run), "--format", "gguf", "--quant", quant, "--output", str(out)]) == 0
    )
    _, reader = fields(out / f"run-{quant}.gguf")
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType[kind]
    assert tensors["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_modelfile_template_renders_our_label_prompt(run, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "gguf"
    assert main(["export", str(run), "--format", "gguf", "--output", str(out)]) == 0
    text = (out / "Modelfile").read_text()
    assert text.startswith("FROM ./run-f16.gguf\n")
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    for line in ("PARAMETER temperature 0", "PARAMETER top_k 1", 'PARAMETER stop "</s>"'):
        assert line in text.splitlines()
    assert "PARAMETER num_predict 6" in text  # tiny-nli's max_label_tokens (dss: label alone)
    for item in INPUTS:
        rendered = render_template(text, item)
        # the string our prompt's tokens spell (no BOS: this tokenizer adds none)
        ids = encode_prompt(tokenizer, LABEL_PREFIX, item, 256, seq2seq=False)
        assert rendered == LABEL_PREFIX + item + "\n"
        assert tokenizer.decode(ids) == rendered


def test_label_first_modelfile_stops_at_the_marker(tiny_causal, tmp_path):
    run = make_run(tiny_causal, tmp_path / "run", mode="label-first")
    out = tmp_path / "gguf"
    assert main(["export", str(run), "--format", "gguf", "--output", str(out)]) == 0
    lines = (out / "Modelfile").read_text().splitlines()
    assert 'PARAMETER stop "\\n"' in lines and 'PARAMETER stop "Because:"' in lines


def error_of(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_bad_inputs_give_one_line_errors_and_write_nothing(run, tiny_seq2seq, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["export", str(run), "--format", "gguf", "--output", str(out)]
    assert "unknown --quant 'q3'" in error_of(capsys, base + ["--quant", "q3"])
    assert "--quant picks" in error_of(
        capsys, base[:3] + ["hf", "--output", str(out), "--quant", "q8_0"]
    )
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run / "config.yaml").read_text())
    assert "no trained model" in error_of(
        capsys, ["export", str(empty), "--format", "gguf", "--output", str(out)]
    )
    t5 = tmp_path / "t5-run"
    shutil.copytree(tiny_seq2seq, t5 / "model")
    save_run_files(
        t5, TrainConfig(task="tiny-nli", student=str(tiny_seq2seq)), task_from_dict(TASK)
    )
    err = error_of(capsys, ["export", str(t5), "--format", "gguf", "--output", str(out)])
    assert "seq2seq (t5)" in err and "--format hf" in err
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))


def test_pre_tokenizer_is_read_from_the_tokenizer():
    digits = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
        ],
    }
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    model = {"type": "BPE", "vocab": {"a": 0, "8": 1, "Ġ": 2}}
    assert pre_tokenizer({"model": model, "pre_tokenizer": digits}, False) == "smollm"
    # no token mixes a digit with anything: the digit split changes nothing
    assert pre_tokenizer({"model": model, "pre_tokenizer": byte_level}, False) == "smollm"
    assert pre_tokenizer({"model": model, "pre_tokenizer": byte_level}, True) == "gpt-2"
    merged = {"type": "BPE", "vocab": {"84": 0}}
    assert pre_tokenizer({"model": merged, "pre_tokenizer": byte_level}, False) == "gpt-2"
    with pytest.raises(GGUFExportError, match="Metaspace"):
        pre_tokenizer({"model": model, "pre_tokenizer": {"type": "Metaspace"}}, False)
    with pytest.raises(GGUFExportError, match="Unigram"):
        pre_tokenizer({"model": {"type": "Unigram"}, "pre_tokenizer": byte_level}, False)


@pytest.mark.slow
@pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="needs llama-cpp-python: pip install 'stepdistill[deploy]'"
)
@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_k_m"])
def test_llama_cpp_answers_like_the_student(run, tmp_path, quant):
    """The exported file in the real engine: f16 writes the Student's greedy outputs
    exactly; q8_0 agrees on most labels; q4_k_m (llama.cpp's quantizer; the tiny model's
    32-wide rows fall back to q5_0/q8_0) loads and answers. Agreement at 4 bits is
    measured on a trained student by benchmarks/deploy.py, not on a random net."""
    from stepdistill.gguf_engine import GGUFStudent
    from stepdistill.student import Student

    out = tmp_path / quant
    assert (
        main(["export", str(run), "--format", "gguf", "--quant", quant, "--output", str(out)]) == 0
    )
    engine = GGUFStudent.load(run, out / f"run-{quant}.gguf", threads=2)
    try:
        ours = Student.load(run).predict(INPUTS)
        theirs = engine.predict(INPUTS)
    finally:
        engine.close()
    assert len({p.label for p in ours}) > 1  # the scrambled model answers each differently
    agree = sum(p.label == r.label for p, r in zip(ours, theirs, strict=True))
    if quant == "f16":
        assert theirs == ours
    elif quant == "q8_0":
        assert agree >= len(INPUTS) // 2, (quant, ours, theirs)
    else:  # 4 bits on a random net: only that llama.cpp's quantizer wrote a loadable file
        assert all(isinstance(r.raw, str) for r in theirs)


def test_predict_engine_flags_give_one_line_errors(run, tmp_path, capsys):
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"premise": "a", "hypothesis": "b"}) + "\n")
    base = ["predict", str(run), "--input", str(records), "--output", str(tmp_path / "o.jsonl")]
    assert "needs --gguf" in error_of(capsys, base + ["--engine", "llama.cpp"])
    assert "add --engine llama.cpp" in error_of(capsys, base + ["--gguf", "x.gguf"])
    assert "unknown --engine 'vllm'" in error_of(capsys, base + ["--engine", "vllm"])
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="needs llama-cpp-python: pip install 'stepdistill[deploy]'"
)
def test_predict_with_the_llama_cpp_engine_writes_the_torch_rows(run, tmp_path, capsys):
    out = tmp_path / "gguf"
    assert main(["export", str(run), "--format", "gguf", "--output", str(out)]) == 0
    records = tmp_path / "in.jsonl"
    rows = [dict(zip(("premise", "hypothesis"), t.split("\n"), strict=True)) for t in INPUTS]
    rows = [
        {"id": str(i), "premise": r["premise"][9:], "hypothesis": r["hypothesis"][12:]}
        for i, r in enumerate(rows)
    ]
    records.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = ["predict", str(run), "--input", str(records)]
    assert main(base + ["--output", str(tmp_path / "torch.jsonl")]) == 0
    gguf_args = ["--engine", "llama.cpp", "--gguf", str(out / "run-f16.gguf"), "--threads", "2"]
    assert main(base + ["--output", str(tmp_path / "llama.jsonl"), *gguf_args]) == 0
    torch_rows = (tmp_path / "torch.jsonl").read_text().splitlines()
    assert (tmp_path / "llama.jsonl").read_text().splitlines() == torch_rows
    assert len(torch_rows) == len(INPUTS)


def test_q4_k_m_without_llama_cpp_says_what_to_install(run, tmp_path, capsys, monkeypatch):
    import stepdistill.gguf_export as gguf_export

    real = importlib.util.find_spec
    monkeypatch.setattr(
        gguf_export.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llama_cpp" else real(name, *a),
    )
    out = tmp_path / "q4"
    argv = ["export", str(run), "--format", "gguf", "--quant", "q4_k_m", "--output", str(out)]
    assert "pip install 'stepdistill[deploy]'" in error_of(capsys, argv)
    assert not out.exists()
