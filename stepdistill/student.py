"""Use a trained student from Python: load a run (or any HF model folder) and predict.

    from stepdistill.student import Student
    student = Student.load("runs/svamp-dss")
    student.predict(["Luke scored 84 points in 2 rounds. Points per round?"], rationale=True)

Inputs are raw task records (dicts: the run's input template is applied) or text that
is already formatted. The prompt layout is the one training used (``encode.py``), and
generation, scoring and precision are ``inference.py``'s, as in training's own test. Importing this module does not import torch: the model is
loaded by ``Student.load``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import DataError, format_input
from .device import resolve_device, use_bf16
from .encode import adds_bos, is_seq2seq
from .inference import (
    best_candidate,
    candidate_labels,
    for_inference,
    generate,
    int8_weights,
    predict,
    score_candidates,
)
from .models import load_student
from .modes import MODES, SINGLE, Mode, get_mode, with_rationale_input
from .run_folder import load_run
from .tasks import Task, normalize_label, task_from_dict

TaskInput = str | dict[str, Any]
"""A formatted input text, or a raw record of the task's fields."""

PLAIN_TASK = {
    "name": "plain",
    "files": {"test": "-"},
    "input_template": "{input}",
    "normalize": "none",
}
"""Stands in for the task of a bare model folder: records need an ``input`` field."""


@dataclass(frozen=True)
class Prediction:
    """One student answer."""

    label: str | None
    """The normalised label, or ``None`` when the student wrote nothing usable."""
    raw: str
    """The decoded ``[label]`` output (single-task and label-first: with the rationale)."""
    rationale: str | None = None
    """The rationale decoded with the ``[rationale]`` prefix, when asked for."""

    def as_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {"label": self.label, "raw": self.raw}
        if self.rationale is not None:
            row["rationale"] = self.rationale
        return row


class Student:
    """A loaded student: model, tokenizer, the run's task and its inference settings.

    Not thread-safe: call it from one thread at a time (the server owns one worker
    thread for it).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        task: Task,
        *,
        name: str = "student",
        mode: str = "dss",
        is_run: bool = False,
        max_input_tokens: int = 256,
        max_rationale_tokens: int = 128,
        batch_size: int = 32,
        bf16: bool = False,
        label_scoring: str = "generate",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.task = task
        self.name = name
        self.mode = mode
        self.mode_spec: Mode = get_mode(mode)
        self.is_run = is_run
        """True for a stepdistill run (task prefixes); False for a plain HF model folder."""
        self.max_input_tokens = max_input_tokens
        self.max_rationale_tokens = max_rationale_tokens
        self.batch_size = batch_size
        self.bf16 = bf16
        self.label_scoring = label_scoring
        """How the run read its labels at validation and test (``generate``, or
        ``candidates``: the most likely of a closed label set); ``predict`` does the same."""
        """bf16 compute, with the weights cast to bf16 once, here (``inference.for_inference``:
        the policy of training's validation and test too)."""
        for_inference(model, bf16)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        bf16: bool | None = None,
        batch_size: int | None = None,
        threads: int | None = None,
        device: str | None = None,
        int8: bool = False,
    ) -> Student:
        """Load a run folder (``config.yaml`` + ``model/``), a run's ``model/`` folder,
        or any Hugging Face causal / seq2seq model folder.

        ``bf16`` defaults to the run's own ``bf16`` setting, resolved as its training
        resolved it (off for a bare model folder); ``threads``
        sets torch's intra-op threads (default: torch's own choice); ``device``: where
        the model runs (default: the run's ``device`` setting, else auto: CUDA when
        available, else the CPU). ``int8``: int8 weights for decoding on the CPU
        (``inference.int8_weights``): passes over a few tokens read int8 weights.
        """
        student = cls._load(path, bf16, batch_size, threads, device)
        if int8:
            if student.model.device.type != "cpu":
                raise ValueError("int8 weights are for decoding on the CPU; drop --int8 on a GPU")
            int8_weights(student.model)
        return student

    @classmethod
    def _load(
        cls,
        path: str | Path,
        bf16: bool | None,
        batch_size: int | None,
        threads: int | None,
        device: str | None,
    ) -> Student:

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run or model folder")
        run_dir = (
            path
            if (path / "config.yaml").is_file()
            else path.parent
            if (path.parent / "config.yaml").is_file()
            else None
        )
        if threads:
            import torch

            torch.set_num_threads(threads)
        if run_dir is None:
            place = resolve_device(device)  # before loading: a bad device fails fast
            model, tokenizer = load_student(str(path))
            model.to(place)
            return cls(
                model,
                tokenizer,
                task_from_dict(PLAIN_TASK),
                name=path.resolve().name,
                is_run=False,
                batch_size=batch_size or 32,
                bf16=bool(bf16),
            )
        run = load_run(run_dir)
        config = run.config
        place = resolve_device(device or config.device)
        model, tokenizer = load_student(str(run_dir / "model"))
        model.to(place)
        return cls(
            model,
            tokenizer,
            run.task,
            name=run_dir.resolve().name,
            mode=config.mode,
            is_run=True,
            max_input_tokens=config.max_input_tokens,
            max_rationale_tokens=config.max_rationale_tokens,
            batch_size=batch_size or config.eval_batch_size,
            label_scoring=config.label_scoring,
            # the run's own setting, as its test used it (one precision policy)
            bf16=use_bf16(bf16 if bf16 is not None else config.bf16, place),
        )

    @property
    def seq2seq(self) -> bool:
        return is_seq2seq(self.model.config)

    def format(self, item: TaskInput, where: str = "input") -> str:
        """The model input for one item: a dict goes through the task's input template
        (for a ``rationale-input`` run, its ``rationale`` field is appended as in
        training); a string is taken as already formatted. Raises ``DataError`` on a
        missing field."""

        return format_item(self.task, self.mode_spec, item, where)

    def predict(self, inputs: list[TaskInput], rationale: bool = False) -> list[Prediction]:
        """Labels (and rationales, decoded with the ``[rationale]`` prefix) for a batch
        of inputs, in order. Decoding is greedy, so the same input gives the same answer.
        A run that scored its labels as candidates (``label_scoring``) picks them so here
        too; its rationales are still generated."""
        if rationale:
            self.check_rationale()
        texts = [self.format(item, f"input {index}") for index, item in enumerate(inputs)]
        if not texts:
            return []
        if self.label_scoring == "candidates":
            chosen = self.choose(inputs)
            if not rationale:
                return chosen
            written = self.predict_generating(texts, rationale=True)
            return [
                Prediction(label=c.label, raw=c.raw, rationale=w.rationale)
                for c, w in zip(chosen, written, strict=True)
            ]
        return self.predict_generating(texts, rationale)

    def predict_generating(self, texts: list[str], rationale: bool) -> list[Prediction]:
        """``predict`` by greedy decoding, for formatted input texts."""
        results = predict(
            self.model,
            self.tokenizer,
            self.task,
            texts,
            self.mode_spec,
            rationale=rationale,
            max_input_tokens=self.max_input_tokens,
            max_rationale_tokens=self.max_rationale_tokens,
            batch_size=self.batch_size,
            bf16=self.bf16,
        )
        return [
            Prediction(label=r["prediction"], raw=r["raw"], rationale=r.get("rationale"))
            for r in results
        ]

    def check_rationale(self) -> None:
        """A ValueError when this student never learnt to write a rationale (asked before
        any model time is spent by ``predict``, the server and the command line)."""
        if self.is_run and not self.mode_spec.writes_rationale:
            raise ValueError(
                f"{self.name} was trained in mode {self.mode}, which never learns to write a "
                "rationale: ask for labels only (modes that write one: "
                f"{', '.join(m.name for m in MODES.values() if m.writes_rationale)})"
            )

    def candidates(self, item: TaskInput, where: str = "input") -> list[str]:
        """The closed label set of one item: the task's ``labels``, else the record's
        answer choices (``choices_field``), normalised like training targets. Raises
        ``DataError`` when the item has none (free-text tasks, formatted text of a
        multiple-choice task)."""
        labels = candidate_labels(self.task, item)
        if labels:
            return labels
        field = self.task.choices_field
        raise DataError(
            f"{where}: no candidate labels (the task has no label set and the item no {field or 'choices'} field)"
        )

    def score_candidates(
        self,
        inputs: list[TaskInput],
        candidates: list[list[str]] | None = None,
        reduce: str = "sum",
    ) -> list[list[float]]:
        """Log-likelihood of each candidate label after the ``[label]`` prompt (summed or,
        with ``reduce="mean"``, averaged over the label's tokens and its end token), one
        forward pass per batch. ``candidates`` default to ``self.candidates(item)``."""
        texts = [self.format(item, f"input {index}") for index, item in enumerate(inputs)]
        if candidates is None:
            candidates = [
                self.candidates(item, f"input {index}") for index, item in enumerate(inputs)
            ]
        if not texts:
            return []
        return score_candidates(
            self.model,
            self.tokenizer,
            texts,
            candidates,
            reduce=reduce,
            max_input_tokens=self.max_input_tokens,
            batch_size=self.batch_size,
            bf16=self.bf16,
        )

    def choose(
        self,
        inputs: list[TaskInput],
        candidates: list[list[str]] | None = None,
        reduce: str = "sum",
    ) -> list[Prediction]:
        """Labels picked from a closed set by likelihood (``score_candidates``) instead of
        generated: always one of the candidates, and cheaper than decoding."""
        if candidates is None:
            candidates = [
                self.candidates(item, f"input {index}") for index, item in enumerate(inputs)
            ]
        scores = self.score_candidates(inputs, candidates, reduce)
        chosen = [
            options[best_candidate(values)]
            for options, values in zip(candidates, scores, strict=True)
        ]
        return [
            Prediction(label=normalize_label(label, self.task.normalize), raw=label)
            for label in chosen
        ]

    def complete(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Plain greedy continuations of raw prompts (no task prefix): what a bare
        language model does behind an OpenAI-style ``/v1/completions``."""

        def encode(text: str) -> list[int]:
            ids = self.tokenizer.encode(text, add_special_tokens=False)[-self.max_input_tokens :]
            if self.seq2seq:
                return ids + [self.tokenizer.eos_token_id]
            bos = self.tokenizer.bos_token_id
            # A chat template may write the BOS itself (Gemma's does): never two of them.
            if adds_bos(self.tokenizer) and ids[:1] != [bos]:
                ids = [bos] + ids
            return ids or [bos if bos is not None else self.tokenizer.eos_token_id]

        if not prompts:
            return []
        return generate(
            self.model,
            self.tokenizer,
            [encode(p) for p in prompts],
            max_new_tokens,
            self.batch_size,
            self.bf16,
            strip=False,
        )

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """A chat as one prompt: the tokenizer's chat template when it has one, else
        ``role: content`` lines ending with ``assistant:``."""
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            )
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join(lines + ["assistant:"])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))


def format_item(task: Task, mode: Mode, item: TaskInput, where: str = "input") -> str:
    """``Student.format`` for any engine: a record through the task's input template (a
    ``rationale-input`` mode's rationale appended as in training), text as it is."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        text = format_input(task, item, where)
        if mode.rationale_in_input:
            # This baseline reads a (teacher's) rationale with the input, as in training.
            text = with_rationale_input(text, item.get("rationale"))
        return text
    raise DataError(
        f"{where}: expected a string or an object of task fields, got {type(item).__name__}"
    )


def rationale_from_single(text: str) -> str | None:
    """The rationale part of a single-task output (all of it when the marker is missing)."""
    return SINGLE.rationale_of(text)
