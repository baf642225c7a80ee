"""How text becomes student tokens: the task prefixes and the prompt / target layout.

Training and inference share these functions so the student always sees the same
layout: ``[label] <input>\\n`` -> ``<label><eos>`` and ``[rationale] <input>\\n`` ->
``<rationale><eos>``. A decoder-only student sees prompt and target as one sequence
(loss on the target only); a seq2seq student reads the prompt and writes the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LABEL_PREFIX = "[label] "
RATIONALE_PREFIX = "[rationale] "
SEPARATOR = "\n"
SINGLE_ANSWER_MARKER = "\nAnswer: "
"""single mode writes ``<rationale>\\nAnswer: <label>`` as one target."""

RATIONALE_INPUT_MARKER = "\nRationale: "
"""rationale-input mode appends the rationale to the input after this marker."""

LABEL, RATIONALE = 0, 1
"""Row kinds: which term of the multi-task loss a row's tokens belong to."""


@dataclass
class EncodedRow:
    prompt: list[int]
    target: list[int]
    kind: int


def encode_prompt(
    tokenizer: Any, prefix: str, text: str, max_tokens: int, seq2seq: bool
) -> list[int]:
    """Prefix + input (its last tokens kept when too long: the question is at the end)."""
    head = tokenizer.encode(prefix, add_special_tokens=False)
    tail = tokenizer.encode(SEPARATOR, add_special_tokens=False) if not seq2seq else []
    body = tokenizer.encode(text, add_special_tokens=False)
    budget = max(1, max_tokens - len(head) - len(tail) - 2)
    ids = head + body[-budget:] + tail
    if seq2seq:
        ids = ids + [tokenizer.eos_token_id]
    elif getattr(tokenizer, "add_bos_token", False) and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def encode_target(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)[:max_tokens] + [tokenizer.eos_token_id]


def single_target(rationale: str | None, label: str) -> str:
    return (
        f"{rationale}{SINGLE_ANSWER_MARKER}{label}"
        if rationale
        else f"{SINGLE_ANSWER_MARKER.strip()} {label}"
    )


def label_from_single(text: str) -> str | None:
    """The label at the end of a single-mode output, or None when the marker is missing."""
    marker = SINGLE_ANSWER_MARKER.strip()
    if marker not in text:
        return None
    return text.rsplit(marker, 1)[1].strip() or None
