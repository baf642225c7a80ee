"""Teachers: one small interface, backends behind a lazy registry.

A teacher turns prompts into raw continuations. Backends live one per file and are
imported only when chosen, so the OpenAI-compatible and local-model backends add no
import cost (and no dependency) to users of the others. Caching and resume are not a
feature of any backend: ``store.CachingTeacher`` wraps whichever one is chosen.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import Example
from ..tasks import Task


@dataclass(frozen=True)
class Request:
    """One call to a teacher: the prompt for one example, and which sample it is."""

    example: Example
    prompt: str
    sample: int = 0


@dataclass
class Completion:
    """A teacher's answer to one request: the raw text, or an error saying why not."""

    request: Request
    text: str | None
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    """``prompt_tokens`` and ``completion_tokens`` (from the API, else a tokenizer count)."""
    cached: bool = False
    """Answered from the store: no new cost."""


class Teacher:
    """What every backend is: one method, ``complete``, and the attributes ``annotate`` and
    the response store read (each with a default here, so a backend sets only what it
    has). A new backend is one file: a subclass, and a line in ``BACKENDS``.
    """

    name: str = "teacher"
    """Short name (written in summaries; names the default annotations folder)."""
    reads_data: bool = False
    """Takes the benchmark data folder (``data=``): it replays outputs stored there."""
    stored: bool = False
    """Its answers are already stored (replay, store): it gets no response store of its own."""
    temperature: float = 0.0
    """Sampling temperature (several samples per example need one above 0)."""
    max_tokens: int | None = None
    """Longest answer it writes, in tokens (for cost estimates); None: unknown."""
    retries: int | None = None
    """Attempts repeated so far (after a 429, 5xx, timeout ...); None: it never retries."""
    batch: bool = False
    """Asks through a batch API: priced at batch prices (``cost.batch_prices``)."""

    folder: Path | None = None
    """Set by ``annotate``: the annotation (response store) folder, where a backend may
    keep state across runs (a submitted batch's id). Never a secret."""
    quiet: bool = False
    """Set by ``annotate``: no progress bars of the backend's own."""

    budget: Any = None
    """The run's ``cost.Budget``, set by ``annotate``: a backend that asks several requests
    at once reserves each one's most in it before asking, so the cap holds."""
    identity: dict[str, Any] | None = None
    """A JSON-able dict of what decides its output (model, generation parameters), never
    a key or endpoint: the response store's cache key. None: its name stands for it."""

    def take_late(self) -> list[Completion]:
        """Answers that arrived after the consumer stopped early (a budget reached), paid
        for and stored but not yielded; each is handed over once."""
        return []

    def tokenizer(self) -> Any:
        """Its tokenizer, where it has one (for exact token counts); None otherwise."""
        return None

    def submit(self, requests: Sequence[Request]) -> None:
        """Announce the whole run's requests before ``complete`` is called split by split:
        a batch backend sends them all in one batch. Others ignore it."""

    def account(self) -> dict[str, Any]:
        """What the backend adds to the summary (the batches it sent); {} for none."""
        return {}

    def complete(self, requests: Sequence[Request]) -> Iterator[Completion]:
        """Yield one completion per request (in any order), as each one is ready."""
        raise NotImplementedError


# name -> "module:class"; imported on first use.
BACKENDS: dict[str, str] = {
    "replay": "stepdistill.teachers.replay:ReplayTeacher",
    "store": "stepdistill.teachers.store:StoreTeacher",
    "openai": "stepdistill.teachers.openai:OpenAITeacher",
    "openai-batch": "stepdistill.teachers.openai_batch:OpenAIBatchTeacher",
    "hf": "stepdistill.teachers.hf:HFTeacher",
}
# Friendly names for a backend with preset options.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    # The first name of the replay teacher (the built-in tasks replay PaLM's outputs); it
    # is called after what it replays, like ``replay`` (see ``teacher_label``).
    "palm-replay": ("replay", {}),
    # A local OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, `stepdistill serve`).
    "local-openai": (
        "openai",
        {"base_url": "http://127.0.0.1:8000/v1", "api_key_env": "STEPDISTILL_API_KEY"},
    ),
}


def teacher_names() -> list[str]:
    """Every backend and alias name ``load_teacher`` accepts."""
    return sorted(set(BACKENDS) | set(ALIASES))


def teacher_label(name: str, task: Task) -> str:
    """What a teacher is called in folders, summaries and tables: the replay teacher says
    what it replays (``palm-replay`` on the built-in tasks, ``llama3-replay`` for a task
    whose ``teacher_name`` is llama3); any other name is itself."""
    backend, _ = ALIASES.get(name, (name, {}))
    return task.replay_name if backend == "replay" else name


REQUIRED_HINTS: dict[str, str] = {
    "model": "--model NAME (the model the server serves, e.g. gpt-4o-mini, or a folder / "
    "hub id for hf)",
    "path": "--option path=STORE.sqlite",
}


def load_teacher(name: str, task: Task, data: Any = None, **options: Any) -> Teacher:
    """Build a teacher by backend name (or alias) for a task; ``data`` (the benchmark data
    folder) goes to the backends that read stored outputs from it."""
    backend, preset = ALIASES.get(name, (name, {}))
    if backend not in BACKENDS:
        raise ValueError(f"unknown teacher {name!r}; choose one of {', '.join(teacher_names())}")
    module_name, class_name = BACKENDS[backend].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    parameters = inspect.signature(cls).parameters
    known = set(parameters) - {"task"}
    unknown = sorted(set(options) - known)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(
            f"teacher {name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    if cls.reads_data:
        options = {"data": data, **options}
    given = {**preset, **options}
    missing = [
        n
        for n, p in parameters.items()
        if n != "task" and p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
        if n not in given
    ]
    if missing:
        raise ValueError(
            f"teacher {name} needs {'; '.join(REQUIRED_HINTS.get(n, f'--option {n}=VALUE') for n in missing)}"
        )
    return cls(task=task, **given)
