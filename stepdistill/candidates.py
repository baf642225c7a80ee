"""Score a closed set of candidate labels by their likelihood, instead of generating.

For a task whose answer is one of a few known strings (CQA's five choices, the NLI
labels), the student can rank the candidates directly: the score of a candidate is the
log-probability of its target tokens (``<label><eos>``, as in training) after the
``[label]``-prefixed prompt, summed (``reduce="sum"``) or averaged per token
(``reduce="mean"``). The answer is the best-scoring candidate.

All of an example's candidates are scored in one forward pass. A decoder-only student
reads one sequence ``prompt | candidate 1 | candidate 2 | ...``: each candidate restarts
its positions after the prompt and attends to the prompt and to itself only (a shared
prefix with a block mask), so the prompt is computed once and the result equals scoring
each candidate on its own (tested). A seq2seq student encodes the prompt once and
decodes every candidate in one batch over the same encoder states.
"""

from __future__ import annotations

from typing import Any

from .encode import LABEL_PREFIX, encode_prompt, encode_target

REDUCTIONS = ("sum", "mean")


def score_candidates(
    model: Any,
    tokenizer: Any,
    inputs: list[str],
    candidates: list[list[str]],
    *,
    reduce: str = "sum",
    max_input_tokens: int = 256,
    max_label_tokens: int = 64,
    batch_size: int = 32,
    bf16: bool | None = None,
) -> list[list[float]]:
    """Log-likelihood of each candidate label of each formatted input, in order.

    ``candidates[i]`` are the (already normalised) labels to rank for ``inputs[i]``;
    each scores its label tokens plus the end-of-sequence token, so a candidate that
    is a prefix of another ("bank" / "bank account") is not favoured for being short.
    Labels are cut at ``max_label_tokens`` like training targets (64 in ``train.py``)."""
    import torch

    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if len(candidates) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(candidates)} candidate lists")
    for index, options in enumerate(candidates):
        if not options:
            raise ValueError(f"input {index}: no candidates to score")
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    prompts = [
        encode_prompt(tokenizer, LABEL_PREFIX, text, max_input_tokens, seq2seq) for text in inputs
    ]
    targets = [
        [encode_target(tokenizer, option, max_label_tokens) for option in options]
        for options in candidates
    ]
    # Batches of similar total length keep padding small.
    order = sorted(range(len(inputs)), key=lambda i: len(prompts[i]) + sum(map(len, targets[i])))
    scores: list[list[float]] = [[] for _ in inputs]
    was_training = model.training
    model.eval()
    from .evaluate import autocast

    with torch.inference_mode(), autocast(bf16):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            score = _score_seq2seq if seq2seq else _score_causal
            log_probs = score(
                model, tokenizer, [prompts[i] for i in batch], [targets[i] for i in batch]
            )
            for i, per_candidate in zip(batch, log_probs, strict=True):
                scores[i] = [
                    float(values.sum() if reduce == "sum" else values.mean())
                    for values in per_candidate
                ]
    model.train(was_training)
    return scores


def best_candidate(scores: list[float]) -> int:
    """Index of the highest score (the first one on a tie)."""
    return max(range(len(scores)), key=lambda j: (scores[j], -j))


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _score_causal(
    model: Any, tokenizer: Any, prompts: list[list[int]], targets: list[list[list[int]]]
) -> list[list[Any]]:
    """Per-token log-probs of each candidate, one packed row per example."""
    import torch

    rows: list[list[int]] = []
    positions: list[list[int]] = []
    segments: list[list[int]] = []
    picks: list[
        list[tuple[list[int], list[int]]]
    ] = []  # per example, per candidate: (predicting positions, tokens)
    for prompt, options in zip(prompts, targets, strict=True):
        ids, pos, seg = list(prompt), list(range(len(prompt))), [0] * len(prompt)
        row_picks = []
        for number, target in enumerate(options, start=1):
            start = len(ids)
            # Token m of a candidate is predicted at the position holding token m-1:
            # the prompt's last token for m = 0, the candidate's own previous token after.
            predicting = [len(prompt) - 1] + [start + m - 1 for m in range(1, len(target))]
            row_picks.append((predicting, target))
            ids += target
            pos += range(len(prompt), len(prompt) + len(target))
            seg += [number] * len(target)
        rows.append(ids)
        positions.append(pos)
        segments.append(seg)
        picks.append(row_picks)
    width = max(map(len, rows))
    pad = _pad_id(tokenizer)
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    position_ids = torch.tensor([p + list(range(width - len(p))) for p in positions])
    # padding: -1, sees only padding
    segment = torch.tensor([s + [-1] * (width - len(s)) for s in segments])
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = segment[:, :, None], segment[:, None, :]
    # A token sees earlier tokens of its own segment, and the prompt (segment 0) unless it is padding.
    mask = ((key == query) | ((key == 0) & (query > 0))) & causal
    inputs = {"input_ids": input_ids, "attention_mask": mask[:, None], "position_ids": position_ids}
    flat_rows = [
        b for b, row_picks in enumerate(picks) for predicting, _ in row_picks for _ in predicting
    ]
    flat_positions = [p for row_picks in picks for predicting, _ in row_picks for p in predicting]
    flat_tokens = [t for row_picks in picks for _, target in row_picks for t in target]
    select = (torch.tensor(flat_rows), torch.tensor(flat_positions))
    if _plain_head(model):
        # The LM head only where a candidate token is predicted: most positions are prompt.
        hidden = model.base_model(**inputs).last_hidden_state
        logits = model.get_output_embeddings()(hidden[select])
    else:
        logits = model(**inputs).logits[select]
    values = torch.log_softmax(logits.float(), dim=-1)[
        torch.arange(len(flat_tokens)), torch.tensor(flat_tokens)
    ]
    return _split(values, [[len(target) for _, target in row_picks] for row_picks in picks])


def _score_seq2seq(
    model: Any, tokenizer: Any, prompts: list[list[int]], targets: list[list[list[int]]]
) -> list[list[Any]]:
    """Encode each prompt once; decode all candidates of the batch as one batch."""
    import torch

    pad = _pad_id(tokenizer)
    width = max(map(len, prompts))
    input_ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])
    attention = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention)
    owner = torch.tensor([b for b, options in enumerate(targets) for _ in options])
    flat = [target for options in targets for target in options]
    target_width = max(map(len, flat))
    labels = torch.tensor([t + [-100] * (target_width - len(t)) for t in flat])
    encoded.last_hidden_state = encoded.last_hidden_state[owner]
    logits = model(encoder_outputs=encoded, attention_mask=attention[owner], labels=labels).logits
    keep = labels != -100
    values = torch.log_softmax(logits[keep].float(), dim=-1)[
        torch.arange(int(keep.sum())), labels[keep]
    ]
    return _split(values, [[len(t) for t in options] for options in targets])


def _split(values: Any, lengths: list[list[int]]) -> list[list[Any]]:
    """Flat per-token values back into examples and candidates."""
    out: list[list[Any]] = []
    start = 0
    for row in lengths:
        out.append([])
        for length in row:
            out[-1].append(values[start : start + length])
            start += length
    return out


def _plain_head(model: Any) -> bool:
    """Models that post-process logits (soft-capping, scaling) take the full-logits path."""
    config = model.config
    plain = not any(
        getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale")
    )
    return plain and model.get_output_embeddings() is not None and model.base_model is not model
