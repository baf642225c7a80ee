"""How text becomes student tokens: the prompt / target layout, and the few facts about
a student model that training and inference both need (seq2seq or not, its padding
token, whether its LM head can run on selected positions only).

Training and inference share these functions so the student always sees the same
layout: ``[label] <input>\\n`` -> ``<label><eos>`` and ``[rationale] <input>\\n`` ->
``<rationale><eos>`` (the prefixes and what a mode's targets hold are in ``modes.py``).
A decoder-only student sees prompt and target as one sequence (loss on the target
only); a seq2seq student reads the prompt and writes the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SEPARATOR = "\n"


@dataclass
class EncodedRow:
    prompt: list[int]
    target: list[int]
    kind: int
    target_kinds: list[int] | None = None
    """The loss term of each target token, where a target feeds both (label-first-split);
    None: every token is ``kind``'s."""

    def kinds(self) -> list[int]:
        """The loss term of each target token."""
        return self.target_kinds or [self.kind] * len(self.target)


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
    elif adds_bos(tokenizer):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer starts every text with its BOS token: its ``add_bos_token``
    says so, or its post-processor writes one (a Gemma tokenizer saved and reloaded by
    transformers 5 loses ``add_bos_token`` but still writes ``<bos>``; Gemma without it
    answers badly)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    if getattr(tokenizer, "add_bos_token", False):
        return True
    return list(tokenizer.encode("", add_special_tokens=True))[:1] == [bos]


def encode_target(tokenizer: Any, text: str, max_tokens: int) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)[:max_tokens] + [tokenizer.eos_token_id]


def is_seq2seq(config: Any) -> bool:
    """An encoder-decoder student (T5) rather than a decoder-only one."""
    return bool(getattr(config, "is_encoder_decoder", False))


def pad_id(tokenizer: Any) -> int:
    """The padding token, or the end token for tokenizers without one."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def plain_lm_head(model: Any) -> bool:
    """Whether the LM head may run on selected hidden states only (most positions are
    prompt, whose logits nobody needs). Models that post-process logits (soft-capping,
    scaling) take the full-logits path."""
    config = model.config
    plain = not any(
        getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale")
    )
    return plain and model.get_output_embeddings() is not None and model.base_model is not model


def segment_mask(segment: Any, shared_prefix: bool = False) -> Any:
    """The 4-D boolean attention mask of packed sequences: token i sees an earlier token j
    of its own segment (``segment``: batch x width ids; padding is -1 and sees only
    padding). With ``shared_prefix``, segment 0 (a prompt) is seen by every later
    segment too: candidates scored after one shared prompt."""
    import torch

    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment.device).tril()
    query, key = segment[:, :, None], segment[:, None, :]
    visible = key == query
    if shared_prefix:
        visible = visible | ((key == 0) & (query > 0))
    return (visible & causal)[:, None]
