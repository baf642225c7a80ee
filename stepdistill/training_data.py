"""What a training run learns from: each example's label and rationale targets for its
mode (``modes.py``), the fixed per-seed subsample of the training split, extra unlabeled
inputs annotated by a teacher, and the token rows an example contributes to a step."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .annotations import default_folder, has_annotations, load_annotations
from .config import TrainConfig
from .data import Example
from .encode import EncodedRow, encode_prompt, encode_target
from .io import read_jsonl
from .modes import LABEL, RATIONALE, Mode, with_rationale_input
from .tasks import Task


@dataclass
class TrainingExample:
    """An example's label target and (where available) rationale target."""

    example: Example
    label: str
    rationale: str | None
    more_rationales: tuple[str, ...] = ()
    """Further rationales for the same example (``more_rationales`` datasets): each is
    another ``[rationale]`` row."""


def uses_teacher_labels(config: TrainConfig) -> bool:
    """Whether the run trains on the teacher's labels (distill, or the unlabeled setting)."""
    return config.mode_spec.teacher_labels(config.label_source)


def needs_annotations(config: TrainConfig) -> bool:
    """Whether training reads a rationale dataset: for the teacher's labels or rationales."""
    mode = config.mode_spec
    return uses_teacher_labels(config) or (
        mode.reads_rationale and config.rationale_source == "teacher"
    )


def annotations_folder(config: TrainConfig, task: Task) -> Path:
    """The rationale dataset this run reads (made beforehand by ``annotate``, or by
    ``stepdistill run``, which annotates when it is missing)."""
    folder = (
        Path(config.annotations) if config.annotations else default_folder(task, config.teacher)
    )
    if not has_annotations(folder):
        raise FileNotFoundError(
            f"{folder}/train.jsonl not found: mode {config.mode} needs the teacher's rationale "
            f"dataset; run `stepdistill annotate --task {config.task} --teacher {config.teacher}` "
            "first (`stepdistill run`, `stepdistill sweep` and `stepdistill train` do it for you)"
        )
    return folder


def training_annotations(config: TrainConfig, task: Task) -> dict[str, dict[str, Any]]:
    """id -> the teacher's annotation of each training example (empty when the run needs
    none: standard fine-tuning, or human rationales with gold labels)."""
    return (
        load_annotations(annotations_folder(config, task), "train")
        if needs_annotations(config)
        else {}
    )


def rationale_for(
    config: TrainConfig, task: Task, example: Example, note: dict[str, Any]
) -> str | None:
    """The rationale a mode trains on: the teacher's, or the dataset's human-written one."""
    if not config.mode_spec.reads_rationale:
        return None
    if config.rationale_source == "human":
        if not task.human_rationale_field:
            raise ValueError(f"task {task.name} has no human rationales (no human_rationale_field)")
        value = example.record.get(task.human_rationale_field)
        return str(value).strip() or None if value else None
    return teacher_rationale(config, note)


def teacher_rationale(config: TrainConfig, note: dict[str, Any]) -> str | None:
    """A teacher's rationale from its annotation of an example (none under
    ``rationale_filter`` where its label disagrees with gold: it argues for that label)."""
    if config.rationale_filter and note.get("teacher_correct") is False:
        return None
    return note.get("rationale")


def with_rationale(mode: Mode, example: Example, rationale: str | None) -> Example:
    """rationale-input modes read the rationale with the input (the paper's Eq. 2)."""
    if not mode.rationale_in_input or not rationale:
        return example
    return dataclasses.replace(example, input=with_rationale_input(example.input, rationale))


def training_examples(
    config: TrainConfig,
    examples: list[Example],
    annotations: dict[str, dict[str, Any]],
    task: Task,
) -> tuple[list[TrainingExample], dict[str, int]]:
    """Pick each example's targets for the mode; count what had to be skipped and why."""
    mode = config.mode_spec
    teacher_labels = mode.teacher_labels(config.label_source)
    others = [load_annotations(folder, "train") for folder in more_rationale_folders(config)]
    chosen: list[TrainingExample] = []
    skipped = {"no_label": 0, "no_rationale": 0}
    for example in examples:
        note = annotations.get(example.id, {})
        label = note.get("teacher_label") if teacher_labels else example.label
        if label is None and example.source_split == "extra":
            label = note.get("teacher_label")  # extra unlabeled inputs: the teacher's label
        if label is None:
            skipped["no_label"] += 1  # e.g. an unparseable teacher output: never guessed
            continue
        rationale = rationale_for(config, task, example, note)
        if mode.reads_rationale and not rationale:
            skipped["no_rationale"] += 1  # still trained on its label
        if mode.rationale_in_input:
            example, rationale = with_rationale(mode, example, rationale), None
        more = tuple(
            text
            for notes in others
            if (text := teacher_rationale(config, notes.get(example.id, {})))
        )
        chosen.append(TrainingExample(example, label, rationale, more))
    return chosen, skipped


def more_rationale_folders(config: TrainConfig) -> list[Path]:
    """The extra rationale datasets of ``more_rationales`` (only a mode that trains a
    rationale task can use them: one more ``[rationale]`` row each)."""
    folders = [Path(p.strip()) for p in (config.more_rationales or "").split(",") if p.strip()]
    if folders and not config.mode_spec.rationale_task:
        raise ValueError(
            f"more_rationales needs a mode with a rationale task (dss), not {config.mode}"
        )
    for folder in folders:
        if not has_annotations(folder):
            raise FileNotFoundError(
                f"{folder}/train.jsonl not found (more_rationales): run `stepdistill annotate` first"
            )
    return folders


def evaluation_inputs(
    config: TrainConfig, task: Task, examples: list[Example], split: str
) -> list[Example]:
    """Evaluation inputs of a rationale-input mode: x plus the rationale for that example,
    from the teacher's stored rationales of ``split`` (the dataset's own, for human
    rationales). An error when the teacher's were never made: evaluation asks no teacher."""
    mode = config.mode_spec
    notes = (
        {}
        if config.rationale_source == "human"
        else load_annotations(annotations_folder(config, task), split)
    )
    return [
        with_rationale(mode, e, rationale_for(config, task, e, notes.get(e.id, {})))
        for e in examples
    ]


def training_pool(config: TrainConfig, train_split: list[Example]) -> list[Example]:
    """A fixed subsample per seed (``train_fraction``, then ``train_limit``), the same for
    every mode: data-size curves compare like with like."""
    pool = list(train_split)
    random.Random(config.seed).shuffle(pool)
    pool = pool[: max(1, round(len(pool) * config.train_fraction))]
    if config.train_limit:
        pool = pool[: config.train_limit]
    return pool


def extra_examples(config: TrainConfig) -> list[Example]:
    """Unlabeled inputs annotated by a teacher, as examples (ids prefixed ``extra-``)."""
    if not config.extra_annotations:
        return []
    path = Path(config.extra_annotations)
    path = path / "train.jsonl" if path.is_dir() else path
    return [
        Example(f"extra-{row['id']}", "train", row["input"], None, "extra", index, row)
        for index, row in enumerate(read_jsonl(path))
    ]


def encode_example(
    tokenizer: Any, config: TrainConfig, item: TrainingExample, seq2seq: bool
) -> list[EncodedRow]:
    """The token rows one example contributes to a step (two for dss)."""
    mode = config.mode_spec
    return [
        split_row(tokenizer, config, item, target, seq2seq)
        if target.label_part is not None
        else EncodedRow(
            encode_prompt(
                tokenizer, target.prefix, item.example.input, config.max_input_tokens, seq2seq
            ),
            encode_target(tokenizer, target.text, target.max_tokens),
            target.kind,
        )
        for target in mode.targets(
            item.label, item.rationale, config.max_rationale_tokens, item.more_rationales
        )
    ]


def split_row(
    tokenizer: Any, config: TrainConfig, item: TrainingExample, target: Any, seq2seq: bool
) -> EncodedRow:
    """A target whose label tokens feed L_label and the rest L_rationale (split_loss): the
    two parts are encoded apart, so the boundary falls between tokens."""
    head = tokenizer.encode(target.label_part, add_special_tokens=False)
    tail = tokenizer.encode(target.text[len(target.label_part) :], add_special_tokens=False)
    ids = (head + tail)[: target.max_tokens] + [tokenizer.eos_token_id]
    labelled = min(len(head), target.max_tokens)
    return EncodedRow(
        encode_prompt(
            tokenizer, target.prefix, item.example.input, config.max_input_tokens, seq2seq
        ),
        ids,
        target.kind,
        [LABEL] * labelled + [RATIONALE] * (len(ids) - labelled),
    )
