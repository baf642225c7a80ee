"""Training configuration: one typed dataclass, loadable from YAML, with dotted overrides.

Unknown keys are errors; the resolved configuration is saved in every run folder.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .modes import MODES, Mode

RATIONALE_SOURCES = ("teacher", "human")
LABEL_SOURCES = ("gold", "teacher")


class ConfigError(ValueError):
    """A configuration value is unknown or invalid."""


@dataclass
class TrainConfig:
    """Everything that defines one training run."""

    task: str = "svamp"
    """Built-in task name or path of a task YAML file."""
    mode: str = "dss"
    """standard (gold labels) | distill (teacher labels) | dss (label + rationale,
    multi-task) | single (one target: rationale then label) | rationale-input (x plus
    the teacher's rationale as input, label as target; needs teacher rationales at test)
    | label-first (one target: label, then the rationale; inference stops at the label)
    | label-first-split (the same target; its label tokens feed L_label, the rest L_rationale).
    The table of modes is ``stepdistill/modes.py``."""
    student: str = "smollm2-135m"
    """Built-in student (smollm2-135m, gemma3-270m: ``models.BUILTIN_STUDENTS``), local HF
    model folder, or hub id."""
    teacher: str = "replay"
    """Teacher whose rationales (and labels, for distill) are used: replay (the task's
    stored outputs; called after them, e.g. palm-replay), openai, hf, store."""
    annotations: str | None = None
    """Folder of a rationale dataset from ``annotate``; made with ``teacher`` if not given."""
    label_source: str = "gold"
    """For the rationale modes (dss, single, rationale-input, label-first): train the label
    task on gold or teacher labels (the unlabeled setting)."""
    rationale_source: str = "teacher"
    """Rationales from the teacher, or the dataset's human-written ones (CoS-E for CQA,
    e-SNLI explanations, ANLI reasons)."""
    more_rationales: str | None = None
    """More rationale datasets (folders from ``annotate``, comma-separated), e.g. a second
    teacher's: each example also trains on their rationale for it, as further
    ``[rationale]`` rows (dss; the label row stays one). ``rationale_filter`` applies."""
    rationale_filter: bool = False
    """Train on the teacher's rationale only where the teacher's label agrees with gold
    (examples without gold keep theirs); the label target is always kept."""
    extra_annotations: str | None = None
    """Extra unlabeled inputs already annotated by a teacher (a rationale dataset folder
    or JSONL from ``annotate``), added to training with teacher labels (the paper's
    SVAMP + ASDiv setting)."""
    rationale_weight: float = 1.0
    """λ in loss = L_label + λ·L_rationale (dss)."""
    epochs: float = 3.0
    """Passes over the training examples (ignored when max_steps is set)."""
    max_steps: int | None = None
    """Optimizer steps; overrides epochs."""
    batch_size: int = 16
    """Examples per optimizer step (a dss example contributes a label and a rationale row)."""
    micro_batch_tokens: int = 4096
    """Upper bound on padded tokens per forward pass; a step is split into as many
    length-sorted micro-batches as needed (the gradient is the same)."""
    pack_length: int = 256
    """Decoder-only students: pack rows end to end into sequences of up to this many
    tokens (each row attends only to itself), so no compute is spent on padding.
    0 turns packing off."""
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    max_input_tokens: int = 256
    max_rationale_tokens: int = 128
    train_fraction: float = 1.0
    """Fraction of the training split to use (a fixed subsample per seed)."""
    train_limit: int | None = None
    """Use at most this many training examples (after train_fraction)."""
    eval_limit: int | None = None
    """Evaluate on at most this many validation / test examples (for quick checks)."""
    valid_limit: int | None = None
    """Validate on at most this many validation examples (the first of the split's fixed
    random order); the test set stays whole. For large validation splits (CQA: ~970)
    where evaluating all of them after every epoch would cost more than the training."""
    evals_per_epoch: int = 1
    """Validation evaluations per epoch; the best-on-validation weights are kept."""
    eval_batch_size: int = 32
    label_scoring: str = "generate"
    """How validation and test read the student's label: generate (greedy decoding, any
    task) or candidates (tasks with a closed label set: the most likely of the task's
    labels or the example's choices, one forward pass, exact and cheaper; modes whose
    label target is the label alone)."""
    checkpoint: bool = True
    """Save a resumable checkpoint (weights, optimizer, scheduler, RNG, data position)
    during training; ``stepdistill train --resume RUN_DIR`` continues a killed run.
    Removed when the run completes."""
    checkpoint_every: int = 0
    """Steps between checkpoints (0: at every validation evaluation)."""
    early_stopping_patience: int = 0
    """Stop after this many validation evaluations in a row without a better accuracy
    (0: never stop early). The best-on-validation weights are kept either way."""
    lora_rank: int = 0
    """Rank of LoRA adapters (0: full fine-tuning). With LoRA only the adapters train
    (needs ``pip install 'stepdistill[lora]'``); the saved model has them merged in, so
    it loads with plain transformers."""
    lora_alpha: float = 16.0
    """LoRA scale: the adapters' update is multiplied by lora_alpha / lora_rank."""
    lora_target_modules: str = "all-linear"
    """Modules that get LoRA adapters: comma-separated names (e.g. q_proj,v_proj), or
    all-linear (every linear layer but the output head)."""
    seed: int = 0
    bf16: bool | None = None
    """Compute in bf16 with fp32 master weights (the saved model is fp32). Default (null):
    bf16 where the hardware has native bf16 (AVX512-BF16/AMX CPUs, recent GPUs; ~4x
    faster there), fp32 elsewhere (emulated bf16 is far slower: 2.5x on an AVX512 CPU
    without AVX512-BF16). true/false force it."""
    compile: bool | None = None
    """Compile the student's forward and backward passes with torch.compile (TorchInductor)
    for training. Default (null): on where it was measured to pay, a decoder-only student
    of at least 10M parameters training in bf16 on the CPU, without LoRA (SmolLM2-135M:
    1.32x the tokens/s, each decoder layer compiled on its own in ~20 s cold, ~10 s cached;
    the demo's run 1.46x faster; benchmarks/RESULTS.md); off elsewhere,
    a GPU included (not measured there). true/false force it. Validation and the test
    run the uncompiled model. Not part of what a run is."""
    threads: int | None = None
    """torch intra-op threads (default: all cores)."""
    device: str = "auto"
    """Where the student trains and answers: auto (CUDA when available, else the CPU), cpu,
    cuda, cuda:N or mps. Under accelerate launch / torchrun, auto and cuda mean each
    process's own GPU (cuda:LOCAL_RANK). Not part of what a run is: --resume may change it."""
    output_dir: str = "runs"
    """Parent folder of run folders."""
    run_name: str | None = None
    recipe: str | None = None
    """A name for what this run tries, for sweeps and reports (e.g. dss-llama3: DSS on a
    second teacher's rationales), where the mode's name alone does not say it. Changes
    nothing in training."""
    data_dir: str | None = None
    """Benchmark data folder (default $STEPDISTILL_DATA, else ../shared/data)."""
    report_to: str = "auto"
    """Where the training log also goes, as in Hugging Face's trainer: auto (TensorBoard,
    into <run>/tensorboard/, when the tensorboard package is installed), none, all
    (every installed one of tensorboard, wandb, mlflow), or a comma-separated list."""

    @property
    def mode_spec(self) -> Mode:
        """The recipe's row of the modes table (the name is checked when the config is made)."""
        return MODES[self.mode]

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.rationale_source not in RATIONALE_SOURCES:
            raise ConfigError(f"rationale_source must be one of {RATIONALE_SOURCES}")
        if self.label_source not in LABEL_SOURCES:
            raise ConfigError(f"label_source must be one of {LABEL_SOURCES}")
        if not 0 < self.train_fraction <= 1:
            raise ConfigError("train_fraction must be in (0, 1]")
        if self.batch_size < 1 or self.learning_rate <= 0 or self.rationale_weight < 0:
            raise ConfigError(
                "batch_size >= 1, learning_rate > 0 and rationale_weight >= 0 are required"
            )
        if self.max_steps is None and self.epochs <= 0:
            raise ConfigError("epochs must be > 0 (or set max_steps)")
        for name in ("train_limit", "eval_limit", "valid_limit"):
            if (limit := getattr(self, name)) is not None and limit < 1:
                raise ConfigError(f"{name} must be >= 1 (or null: no limit)")
        if self.label_scoring not in ("generate", "candidates"):
            raise ConfigError("label_scoring must be generate or candidates")
        if self.label_scoring == "candidates" and MODES[self.mode].layout.holds_rationale:
            raise ConfigError(
                f"label_scoring candidates scores the label alone; mode {self.mode} writes more "
                "after [label]: use label_scoring generate"
            )
        if self.early_stopping_patience < 0:
            raise ConfigError("early_stopping_patience must be >= 0 (0: off)")
        if self.lora_rank < 0 or (self.lora_rank and self.lora_alpha <= 0):
            raise ConfigError("lora_rank must be >= 0 (0: off) and lora_alpha > 0")
        if not re.fullmatch(r"auto|cpu|cuda|cuda:\d+|mps", self.device.strip().lower()):
            raise ConfigError(
                f"unknown device {self.device!r}; choose one of auto, cpu, cuda, cuda:N, mps"
            )
        if self.lora_rank and not self.lora_target_modules.strip(" ,"):
            raise ConfigError("lora_target_modules must name modules (or be all-linear)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under each field (read from the source, for --help)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    """Turn a YAML / command-line value into the field's type."""
    options = (
        typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    )
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if type(None) in options:
            return None
        raise ConfigError(f"{name} cannot be empty")
    for option in options:
        if option is type(None):
            continue
        try:
            if option is bool:
                if isinstance(value, bool):
                    return value
                if str(value).lower() in ("true", "1", "yes"):
                    return True
                if str(value).lower() in ("false", "0", "no"):
                    return False
                raise ValueError
            if option is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return option(value)
        except (TypeError, ValueError):
            continue
    raise ConfigError(f"{name}: {value!r} is not a valid {annotation}")


def make_config(values: dict[str, Any]) -> TrainConfig:
    """A config from a flat mapping; unknown keys are an error."""
    known = typing.get_type_hints(TrainConfig)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known keys: {', '.join(known)}")
    coerced = {key: _coerce(key, known[key], value) for key, value in values.items()}
    return TrainConfig(**coerced)


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """YAML file (optional) then overrides, later wins."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping")
        values.update(loaded)
    values.update(overrides or {})
    return make_config(values)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["epochs=3", "learning_rate=3e-4"]`` -> a mapping. The config is flat, so a dotted
    key (``train.epochs=3``) is refused rather than guessed at."""
    result: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if "." in key:
            raise ConfigError(
                f"override {item!r}: the config is flat, write {key.split('.')[-1]}={value}"
            )
        result[key] = yaml.safe_load(value)
    return result


__all__ = [
    "TrainConfig",
    "ConfigError",
    "load_config",
    "make_config",
    "parse_overrides",
    "MODES",
    "field",
]
