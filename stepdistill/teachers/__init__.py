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
from typing import Any, Protocol

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


class Teacher(Protocol):
    """The one method every backend implements.

    A backend whose answers are worth caching also has ``identity``: a JSON-able dict
    of what decides its output (model, generation parameters), never a key or endpoint.
    """

    name: str

    def complete(self, requests: Sequence[Request]) -> Iterator[Completion]:
        """Yield one completion per request (in any order), as each one is ready."""
        ...


# name -> "module:class"; imported on first use.
BACKENDS: dict[str, str] = {
    "replay": "stepdistill.teachers.replay:ReplayTeacher",
    "store": "stepdistill.teachers.store:StoreTeacher",
    "openai": "stepdistill.teachers.openai:OpenAITeacher",
    "hf": "stepdistill.teachers.hf:HFTeacher",
}
# Friendly names for a backend with preset options.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
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


def load_teacher(name: str, task: Task, **options: Any) -> Teacher:
    """Build a teacher by backend name (or alias) for a task."""
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
    return cls(task=task, **{**preset, **options})
