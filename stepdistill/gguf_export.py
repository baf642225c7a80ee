"""Export a trained run as one GGUF file for llama.cpp and Ollama (``export --format
gguf``), with an Ollama ``Modelfile`` beside it whose template writes the run's label
prompt.

    stepdistill export runs/svamp-dss --format gguf --output svamp-gguf
    stepdistill export runs/svamp-dss --format gguf --quant q4_k_m --output svamp-q4

The file is what llama.cpp's ``convert_hf_to_gguf.py`` writes for a llama-architecture
model: its hyperparameters under ``llama.*``, the tensors under llama.cpp's names (the
query and key projections permuted from Hugging Face's rotate-half layout to the
interleaved pairs llama.cpp rotates), and the tokenizer as a GPT-2 style byte-level BPE
(tokens, token types, merges, special token ids, chat template). f16, bf16 and q8_0 are
written by the ``gguf`` package; q4_k_m (K-quants, which ``gguf`` cannot quantize) is
llama.cpp's own quantizer, from llama-cpp-python, run on the f16 file.

Only decoder-only llama-architecture students with a byte-level BPE tokenizer (the
default SmolLM2) are supported; anything else is refused before a byte is written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from .hub_export import check_trained
from .models import load_student
from .modes import LABEL_PREFIX, get_mode
from .run_folder import load_run

QUANTS = ("f16", "bf16", "q8_0", "q4_k_m")
"""``--quant`` choices: half precision (f16, bf16), 8-bit (q8_0) and llama.cpp's 4-bit
K-quant mix (q4_k_m)."""

MODELFILE = "Modelfile"


class GGUFExportError(ValueError):
    """The run cannot be written as a GGUF file faithfully."""


# ----------------------------------------------------------------------------- checks


def check_supported(model_dir: Path) -> dict[str, Any]:
    """The model's config.json, or a one-line GGUFExportError naming what is not supported
    (read before the weights are loaded, so nothing is written for a refused model)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    kind = config.get("model_type")
    if config.get("is_encoder_decoder") or kind in ("t5", "mt5", "bart"):
        raise GGUFExportError(
            f"{model_dir}: a seq2seq ({kind}) student; GGUF export supports decoder-only "
            "llama-architecture students (such as smollm2-135m): use --format hf"
        )
    if kind != "llama" or config.get("architectures", ["LlamaForCausalLM"]) != ["LlamaForCausalLM"]:
        raise GGUFExportError(
            f"{model_dir}: a {kind} student; GGUF export supports llama-architecture "
            "students (model_type llama, such as smollm2-135m): use --format hf"
        )
    if config.get("hidden_act", "silu") != "silu":
        raise GGUFExportError(
            f"{model_dir}: hidden_act {config['hidden_act']}; llama.cpp's llama uses silu"
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", "linear"):
        raise GGUFExportError(
            f"{model_dir}: rope type {rope.get('rope_type', rope.get('type'))!r} is not "
            "supported by this export (default and linear are)"
        )
    return config


def pre_tokenizer(tokenizer_json: dict[str, Any], clean_up: bool) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for the tokenizer's pre-tokenizer: the
    regex that splits text before BPE. A byte-level BPE with GPT-2's regex is ``gpt-2``;
    with single digits split first (Hugging Face's SmolLM2) it is ``smollm``. A
    byte-level tokenizer whose vocabulary has no token mixing a digit with anything else
    tokenizes the same either way; it gets ``smollm`` too when it does not clean up
    spaces on decoding, since llama.cpp's ``gpt-2`` removes the space before ``.,!?``
    and its ``smollm`` does not."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise GGUFExportError(
            f"a {model.get('type')} tokenizer; GGUF export supports byte-level BPE tokenizers"
        )
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    byte_level = steps[-1] if steps else {}
    if kinds[-1:] != ["ByteLevel"] or not byte_level.get("use_regex", True):
        raise GGUFExportError(f"pre-tokenizer {kinds}; GGUF export supports byte-level BPE")
    if byte_level.get("add_prefix_space"):
        raise GGUFExportError("a byte-level tokenizer that adds a prefix space is not supported")
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds != ["ByteLevel"]:
        raise GGUFExportError(f"pre-tokenizer {kinds}; GGUF export supports byte-level BPE")
    digit_merges = any(re.search(r"[0-9]", t) and len(t) > 1 for t in model.get("vocab", {}))
    return "gpt-2" if digit_merges or clean_up else "smollm"


# ----------------------------------------------------------------------------- tokenizer


def add_tokenizer(writer: Any, tokenizer: Any, model_dir: Path, vocab_size: int) -> str:
    """The vocabulary as llama.cpp's ``gpt2`` tokenizer model (as ``convert_hf_to_gguf``'s
    ``_set_vocab_gpt2``); returns the pre-tokenizer name."""
    import gguf

    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    pre = pre_tokenizer(
        tokenizer_json, bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
    )
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise GGUFExportError(f"the tokenizer has ids beyond the model's vocab_size {vocab_size}")
    reverse = {index: token for token, index in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for index in range(vocab_size):
        token = reverse.get(index)
        if token is None:  # an embedding row no token uses (a padded vocabulary)
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            looks_special = token.startswith("<|") and token.endswith("|>")
            special = added[index].special or looks_special
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    # What the student's own prompts hold (encode.encode_prompt), not a library default.
    special.add_special_token["bos"] = bool(getattr(tokenizer, "add_bos_token", False))
    special.add_special_token["eos"] = False
    special.add_to_gguf(writer, quiet=True)
    return pre


# ----------------------------------------------------------------------------- weights


def permute(weights: Any, heads: int) -> Any:
    """Hugging Face's rotate-half q/k rows to llama.cpp's interleaved pairs (what
    ``convert_hf_to_gguf``'s ``LlamaModel.permute`` does)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def tensor_type(quant: str) -> Any:
    import gguf

    types = gguf.GGMLQuantizationType
    return {"f16": types.F16, "bf16": types.BF16, "q8_0": types.Q8_0}[quant]


def file_type(quant: str) -> Any:
    import gguf

    kinds = gguf.LlamaFileType
    return {"f16": kinds.MOSTLY_F16, "bf16": kinds.MOSTLY_BF16, "q8_0": kinds.MOSTLY_Q8_0}[quant]


def add_tensors(writer: Any, model: Any, config: dict[str, Any], quant: str) -> int:
    """The weights under llama.cpp's names: matrices in ``quant``, norms in f32 (as the
    converter keeps them). Returns how many tensors were written."""
    import gguf
    import torch

    layers = config["num_hidden_layers"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    tied = bool(config.get("tie_word_embeddings"))
    written = 0
    for name, tensor in model.state_dict().items():
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue  # recomputed by llama.cpp / the same matrix as token_embd
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise GGUFExportError(f"tensor {name} has no llama.cpp name; cannot export it")
        data = tensor.detach().to(torch.float32)
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, heads)
        elif name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute(data, kv_heads or heads)
        array = data.numpy()
        if array.ndim <= 1 or target.endswith("_norm.weight"):
            kind = gguf.GGMLQuantizationType.F32
        else:
            kind = tensor_type(quant)
        try:
            packed = gguf.quants.quantize(array, kind)
        except gguf.QuantError:  # rows not a whole number of blocks: half precision
            kind = gguf.GGMLQuantizationType.F16
            packed = gguf.quants.quantize(array, kind)
        writer.add_tensor(target, packed, raw_dtype=kind)
        written += 1
    return written


def add_hyperparameters(writer: Any, config: dict[str, Any], name: str, quant: str) -> None:
    """``llama.*`` keys as ``convert_hf_to_gguf`` writes them for a llama model."""
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_name(name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    writer.add_rope_freq_base(float(theta))
    if rope.get("rope_type", rope.get("type")) == "linear" and rope.get("factor"):
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    if config.get("head_dim") is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(file_type(quant))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim)


def write_gguf(
    model: Any, tokenizer: Any, model_dir: Path, path: Path, quant: str, name: str
) -> dict[str, Any]:
    """A loaded student (from the folder ``model_dir``) as one GGUF file at ``path``, in
    f16, bf16 or q8_0."""
    import gguf

    config = check_supported(model_dir)
    writer = gguf.GGUFWriter(str(path), "llama")
    add_hyperparameters(writer, config, name, quant)
    pre = add_tokenizer(writer, tokenizer, model_dir, config["vocab_size"])
    count = add_tensors(writer, model, config, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": count, "pre_tokenizer": pre}


def check_quantizer() -> None:
    """A one-line GGUFExportError unless llama.cpp's quantizer (llama-cpp-python) is there."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise GGUFExportError(
            "--quant q4_k_m runs llama.cpp's quantizer: pip install 'stepdistill[deploy]' "
            "(llama-cpp-python), or export f16 and run llama.cpp's llama-quantize on it"
        )


def quantize_q4_k_m(source: Path, target: Path, threads: int | None = None) -> None:
    """llama.cpp's own quantizer (``llama_model_quantize``) from an f16 file: K-quants need
    it (``gguf`` writes no K-quants). Matrices whose rows are not a multiple of 256
    (SmolLM2's 576) get llama.cpp's fallback type, as ``llama-quantize`` does."""
    check_quantizer()
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = threads or 0
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        raise GGUFExportError(f"llama.cpp's quantizer failed on {source} (status {status})")


# ----------------------------------------------------------------------------- Ollama


def modelfile(gguf_name: str, stop: list[str], max_new_tokens: int, context: int) -> str:
    """An Ollama Modelfile whose template is the run's label prompt: ``[label] ``, the
    input, a newline (a BOS token before it comes from the GGUF's add_bos_token, as in
    training); greedy decoding that stops at the end token (and the mode's stop strings)
    within the label budget."""
    template = LABEL_PREFIX + "{{ .Prompt }}\n"
    lines = [
        f"FROM ./{gguf_name}",
        "",
        "# stepdistill's label prompt: `[label] <input>` and a newline; greedy decoding.",
        "# The input is the task's input template filled with a record (stepdistill predict does that).",
        f'TEMPLATE """{template}"""',
        'SYSTEM """"""',
        "PARAMETER temperature 0",
        "PARAMETER top_k 1",
        "PARAMETER seed 0",
        "PARAMETER repeat_penalty 1",
        f"PARAMETER num_predict {max_new_tokens}",
        f"PARAMETER num_ctx {context}",
    ]
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stop]
    return "\n".join(lines) + "\n"


def render_template(text: str, prompt: str) -> str:
    """An Ollama Modelfile's TEMPLATE with ``.Prompt`` filled in (the only variable ours
    uses): what Ollama sends the model for ``ollama run`` with ``prompt``."""
    match = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M)
    if match is None:
        raise ValueError("no TEMPLATE in this Modelfile")
    return match.group(1).replace("{{ .Prompt }}", prompt)


# ----------------------------------------------------------------------------- export


def export_gguf(run_dir: str | Path, output: str | Path, quant: str = "f16") -> dict[str, Any]:
    """Write ``run_dir``'s trained student as ``<output>/<run>-<quant>.gguf`` plus an
    Ollama ``Modelfile`` (``output``: a new or empty folder). Returns a summary."""
    if quant not in QUANTS:
        raise ValueError(f"unknown --quant {quant!r}; choose one of {', '.join(QUANTS)}")
    path = Path(run_dir)
    check_trained(path)
    model_dir = path / "model"
    check_supported(model_dir)
    if quant == "q4_k_m":
        check_quantizer()
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder; give a new --output")
    run = load_run(path)
    name = path.resolve().name
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    file = f"{name}-{quant}.gguf"
    model, tokenizer = load_student(str(model_dir))
    shutil.rmtree(tmp, ignore_errors=True)  # a crashed export's leftovers
    tmp.mkdir(parents=True)
    try:
        if quant == "q4_k_m":
            half = tmp / f"{name}-f16.gguf"
            summary = write_gguf(model, tokenizer, model_dir, half, "f16", name)
            quantize_q4_k_m(half, tmp / file)
            half.unlink()
        else:
            summary = write_gguf(model, tokenizer, model_dir, tmp / file, quant, name)
        mode = get_mode(run.config.mode)
        budget = mode.label_budget(run.task.max_label_tokens, run.config.max_rationale_tokens)
        eos = tokenizer.eos_token
        stop = [eos, *mode.layout.stop_strings] if eos else list(mode.layout.stop_strings)
        context = run.config.max_input_tokens + budget
        (tmp / MODELFILE).write_text(modelfile(file, stop, budget, context), encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.replace(out)
    return {
        "output": str(out),
        "gguf": str(out / file),
        "quant": quant,
        "bytes": (out / file).stat().st_size,
        "modelfile": str(out / MODELFILE),
        **summary,
    }
