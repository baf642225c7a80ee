"""Student-side inference: greedy generation, label prediction and candidate scoring,
with one precision policy. Training's validation and test, ``evaluate``, ``predict``,
``serve`` and ``Student`` all run the model through this module, so a run's recorded
test accuracy and the answers of ``Student`` on the same inputs are the same.

Precision: with bf16 the model's *parameters* are cast to bf16 (``for_inference``) and
every pass runs under bf16 autocast. Training computes with bf16 parameters too (fp32
master weights are kept apart), so validation during training, the test at its end and
a reloaded ``Student`` see the same numbers.

Candidate scoring ranks a closed set of labels by likelihood instead of generating: the
score of a candidate is the log-probability of its target tokens (``<label><eos>``, as in
training) after the ``[label]`` prompt, summed or averaged per token. A decoder-only
student reads one sequence ``prompt | candidate 1 | candidate 2 | ...``: each candidate
restarts its positions after the prompt and attends to the prompt and to itself only,
so the prompt is computed once and the result equals scoring each candidate on its own
(tested). A seq2seq student encodes the prompt once and decodes every candidate in one
batch over the same encoder states.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

from tqdm.auto import tqdm

from .device import additive_mask, use_bf16
from .encode import encode_prompt, encode_target, is_seq2seq, pad_id, plain_lm_head, segment_mask
from .modes import LABEL_PREFIX, LABEL_TARGET_TOKENS, RATIONALE_PREFIX, Mode, get_mode
from .tasks import Task, normalize_label

REDUCTIONS = ("sum", "mean")


# ----------------------------------------------------------------------------- precision


def cast_parameters(model: Any, dtype: Any) -> None:
    """Cast the parameters only: ``model.to(bfloat16)`` would also round float buffers
    such as the rotary inverse frequencies (0.1 -> 0.1001), which are not saved, so
    positions would be encoded unlike in training."""
    for parameter in model.parameters():
        parameter.data = parameter.data.to(dtype)


def for_inference(model: Any, bf16: bool) -> None:
    """The one precision policy: bf16 parameters when ``bf16`` (autocast over fp32
    weights would re-cast every weight matrix at every decoding step, ~2x slower on
    CPU), else the model as it is."""
    import torch

    if bf16 and getattr(model, "dtype", None) == torch.float32:
        cast_parameters(model, torch.bfloat16)


def int8_weights(model: Any) -> int:
    """Weight-only int8 for CPU decoding: every linear layer (the LM head included) also
    keeps its weights as int8 with one scale per output row, and a pass over at most
    ``INT8_MAX_ROWS`` token rows (a decoding step at batch 1 to 4) multiplies through
    torch's int8-weight kernel, reading half the bytes; longer passes (the prompt, larger
    batches) keep the bf16 weights, where that kernel is slower than bf16 matmuls
    (``benchmarks/inference.py --int8-rows``). For inference only; returns how many
    layers were replaced."""
    import torch

    int8_linear = _int8_linear_class()
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, int8_linear(child))
                replaced += 1
    return replaced


INT8_MAX_ROWS = 4


@functools.cache
def _int8_linear_class() -> Any:
    """The int8 layer's class, defined once, on first use (torch is imported late)."""
    import torch

    class Int8LinearImpl(torch.nn.Module):
        """A linear layer that also holds int8 weights (symmetric, one scale per output
        row) for passes over a few token rows; activations stay in their dtype."""

        def __init__(self, linear: Any):
            super().__init__()
            self.linear = linear  # the bf16 weights, for passes over many rows
            weight = linear.weight.detach().float()
            scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127
            self.register_buffer(
                "weight_int8", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
            )
            self.register_buffer("scales", scales)
            self.scales_by_dtype: dict[Any, Any] = {}

        def forward(self, x: Any) -> Any:
            shape = x.shape
            if x.numel() > INT8_MAX_ROWS * shape[-1]:
                return self.linear(x)
            scales = self.scales_by_dtype.get(x.dtype)
            if scales is None:  # in the activations' dtype (bf16, or fp32 without bf16)
                scales = self.scales_by_dtype[x.dtype] = self.scales.to(x.dtype)
            out = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), self.weight_int8, scales)
            if self.linear.bias is not None:
                out = out + self.linear.bias
            return out.reshape(*shape[:-1], self.linear.out_features)

    return Int8LinearImpl


def autocast(model: Any, enabled: bool | None) -> Any:
    """bf16 autocast on the model's device when ``enabled`` (None: where supported)."""
    import torch

    device = model.device.type if hasattr(model, "device") else "cpu"
    if use_bf16(enabled, device):
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- generation


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 32,
    bf16: bool | None = None,
    desc: str | None = None,
    strip: bool = True,
    stop_strings: tuple[str, ...] = (),
) -> list[str]:
    """Greedy decoding with the KV cache, batched by similar length, stopping at EOS (or
    at any of ``stop_strings``).

    ``strip=False`` keeps the continuation's leading space (raw completions need it)."""
    import torch

    seq2seq = is_seq2seq(model.config)
    pad = pad_id(tokenizer)
    device = model.device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    stops = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    with torch.inference_mode(), autocast(model, bf16):
        for batch in tqdm(batches, desc=desc, disable=desc is None, leave=False):
            width = max(len(prompts[i]) for i in batch)
            # Decoder-only models continue the prompt, so pad on the left; seq2seq on the right.
            rows = [
                prompts[i] + [pad] * (width - len(prompts[i]))
                if seq2seq
                else [pad] * (width - len(prompts[i])) + prompts[i]
                for i in batch
            ]
            mask = [
                [1] * len(prompts[i]) + [0] * (width - len(prompts[i]))
                if seq2seq
                else [0] * (width - len(prompts[i])) + [1] * len(prompts[i])
                for i in batch
            ]
            generated = model.generate(
                input_ids=torch.tensor(rows, device=device),
                attention_mask=torch.tensor(mask, device=device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                **stops,
            )
            new_tokens = generated if seq2seq else generated[:, width:]
            for i, tokens in zip(batch, new_tokens.tolist(), strict=True):
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                outputs[i] = text.strip() if strip else text
    model.train(was_training)
    return outputs


def normal_label(task: Task, text: str | None) -> str | None:
    """A decoded label in the task's normal form (None when there is none)."""
    if text is None or not text.strip():
        return None
    return normalize_label(text, task.normalize)


def predict(
    model: Any,
    tokenizer: Any,
    task: Task,
    inputs: list[str],
    mode: Mode | str,
    rationale: bool = False,
    max_input_tokens: int = 256,
    max_rationale_tokens: int = 128,
    batch_size: int = 32,
    bf16: bool | None = None,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Labels (and rationales when asked) for formatted task inputs: ``prediction`` (the
    normalised label), ``raw`` (the decoded ``[label]`` output) and maybe ``rationale``."""
    mode = get_mode(mode) if isinstance(mode, str) else mode
    seq2seq = is_seq2seq(model.config)
    prompts = [
        encode_prompt(tokenizer, LABEL_PREFIX, text, max_input_tokens, seq2seq) for text in inputs
    ]
    layout = mode.layout
    if rationale and layout.holds_rationale:
        # One output holds both: generate all of it and read each part.
        budget = max_rationale_tokens + task.max_label_tokens + 8
        raw = generate(model, tokenizer, prompts, budget, batch_size, bf16, desc)
        return [
            {
                "prediction": normal_label(task, layout.label_of(text)),
                "raw": text,
                "rationale": layout.rationale_of(text),
            }
            for text in raw
        ]
    budget = mode.label_budget(task.max_label_tokens, max_rationale_tokens)
    raw = generate(
        model, tokenizer, prompts, budget, batch_size, bf16, desc, stop_strings=layout.stop_strings
    )
    results = [
        {"prediction": normal_label(task, layout.label_of(text)), "raw": text} for text in raw
    ]
    if rationale and mode.rationale_task:
        rationale_prompts = [
            encode_prompt(tokenizer, RATIONALE_PREFIX, t, max_input_tokens, seq2seq) for t in inputs
        ]
        texts = generate(
            model, tokenizer, rationale_prompts, max_rationale_tokens, batch_size, bf16
        )
        for result, text in zip(results, texts, strict=True):
            result["rationale"] = text
    return results


# ----------------------------------------------------------------------------- candidates


def score_candidates(
    model: Any,
    tokenizer: Any,
    inputs: list[str],
    candidates: list[list[str]],
    *,
    reduce: str = "sum",
    max_input_tokens: int = 256,
    max_label_tokens: int = LABEL_TARGET_TOKENS,
    batch_size: int = 32,
    bf16: bool | None = None,
    desc: str | None = None,
) -> list[list[float]]:
    """Log-likelihood of each candidate label of each formatted input, in order (a
    progress bar named ``desc`` over the batches when one is given).

    ``candidates[i]`` are the (already normalised) labels to rank for ``inputs[i]``;
    each scores its label tokens plus the end-of-sequence token, so a candidate that
    is a prefix of another ("bank" / "bank account") is not favoured for being short.
    Labels are cut at ``max_label_tokens`` like training targets."""
    import torch

    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    if len(candidates) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(candidates)} candidate lists")
    for index, options in enumerate(candidates):
        if not options:
            raise ValueError(f"input {index}: no candidates to score")
    seq2seq = is_seq2seq(model.config)
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
    with torch.inference_mode(), autocast(model, bf16):
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
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


def candidate_labels(task: Task, record: Any) -> list[str] | None:
    """The closed label set of one item: the task's ``labels``, else the record's answer
    choices (``choices_field``), normalised like training targets; None when it has none."""
    if task.labels:
        return list(task.labels)
    field = task.choices_field
    if field and isinstance(record, dict) and isinstance(record.get(field), list) and record[field]:
        return [normalize_label(str(choice), task.normalize) for choice in record[field]]
    return None


def choose(
    model: Any,
    tokenizer: Any,
    task: Task,
    inputs: list[str],
    candidates: list[list[str]],
    mode: Mode | str,
    *,
    max_input_tokens: int = 256,
    batch_size: int = 32,
    bf16: bool | None = None,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Labels picked from each input's closed set by likelihood instead of generated: one
    forward pass per batch, always one of the candidates (exact scoring of a closed label
    set, cheaper than decoding). Only for modes whose ``[label]`` target is the label
    alone (a label-first or single-task target goes on after it)."""
    mode = get_mode(mode) if isinstance(mode, str) else mode
    if mode.layout.holds_rationale:
        raise ValueError(
            f"mode {mode.name} writes more than the label after [label]: score it by generating"
        )
    scores = score_candidates(
        model,
        tokenizer,
        inputs,
        candidates,
        max_input_tokens=max_input_tokens,
        batch_size=batch_size,
        bf16=bf16,
        desc=desc,
    )
    chosen = [
        options[best_candidate(values)] for options, values in zip(candidates, scores, strict=True)
    ]
    return [{"prediction": normal_label(task, label), "raw": label} for label in chosen]


def _score_causal(
    model: Any, tokenizer: Any, prompts: list[list[int]], targets: list[list[list[int]]]
) -> list[list[Any]]:
    """Per-token log-probs of each candidate, one packed row per example."""
    import torch

    device = model.device

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
    pad = pad_id(tokenizer)
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    position_ids = torch.tensor([p + list(range(width - len(p))) for p in positions], device=device)
    # padding: -1, sees only padding
    segment = torch.tensor([s + [-1] * (width - len(s)) for s in segments], device=device)
    # A token sees earlier tokens of its own segment, and the prompt (segment 0).
    # (made additive for attention that adds its mask: a user's eager-attention student)
    mask = additive_mask(model, segment_mask(segment, shared_prefix=True))
    inputs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}
    flat_rows = [
        b for b, row_picks in enumerate(picks) for predicting, _ in row_picks for _ in predicting
    ]
    flat_positions = [p for row_picks in picks for predicting, _ in row_picks for p in predicting]
    flat_tokens = [t for row_picks in picks for _, target in row_picks for t in target]
    select = (torch.tensor(flat_rows, device=device), torch.tensor(flat_positions, device=device))
    if plain_lm_head(model):
        # The LM head only where a candidate token is predicted: most positions are prompt.
        hidden = model.base_model(**inputs).last_hidden_state
        logits = model.get_output_embeddings()(hidden[select])
    else:
        logits = model(**inputs).logits[select]
    values = torch.log_softmax(logits.float(), dim=-1)[
        torch.arange(len(flat_tokens), device=device), torch.tensor(flat_tokens, device=device)
    ]
    return _split(values, [[len(target) for _, target in row_picks] for row_picks in picks])


def _score_seq2seq(
    model: Any, tokenizer: Any, prompts: list[list[int]], targets: list[list[list[int]]]
) -> list[list[Any]]:
    """Encode each prompt once; decode all candidates of the batch as one batch."""
    import torch

    device = model.device

    pad = pad_id(tokenizer)
    width = max(map(len, prompts))
    input_ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts], device=device)
    attention = torch.tensor(
        [[1] * len(p) + [0] * (width - len(p)) for p in prompts], device=device
    )
    encoded = model.get_encoder()(input_ids=input_ids, attention_mask=attention)
    owner = torch.tensor([b for b, options in enumerate(targets) for _ in options], device=device)
    flat = [target for options in targets for target in options]
    target_width = max(map(len, flat))
    labels = torch.tensor([t + [-100] * (target_width - len(t)) for t in flat], device=device)
    encoded.last_hidden_state = encoded.last_hidden_state[owner]
    logits = model(encoder_outputs=encoded, attention_mask=attention[owner], labels=labels).logits
    keep = labels != -100
    values = torch.log_softmax(logits[keep].float(), dim=-1)[
        torch.arange(int(keep.sum()), device=device), labels[keep]
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


def check_candidates(task: Task, examples: list[Any]) -> list[list[str]]:
    """Each example's closed label set; an error naming the first example without one."""
    candidates = [candidate_labels(task, example.record) for example in examples]
    for example, options in zip(examples, candidates, strict=True):
        if not options:
            raise ValueError(
                f"label_scoring candidates: task {task.name} has no label set and example "
                f"{example.id} no choices; use label_scoring generate"
            )
    return candidates  # type: ignore[return-value]


def student_labels(
    model: Any,
    tokenizer: Any,
    task: Task,
    config: Any,
    examples: list[Any],
    bf16: bool | None,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """A run's labels for examples, read as its config says (``label_scoring``): what
    training's validation and test, and ``evaluate``, score."""
    mode = config.mode_spec
    inputs = [example.input for example in examples]
    if config.label_scoring == "candidates":
        candidates = check_candidates(task, examples)
        return choose(
            model,
            tokenizer,
            task,
            inputs,
            candidates,  # type: ignore[arg-type]
            mode,
            max_input_tokens=config.max_input_tokens,
            batch_size=config.eval_batch_size,
            bf16=bf16,
            desc=desc,
        )
    return predict(
        model,
        tokenizer,
        task,
        inputs,
        mode,
        max_input_tokens=config.max_input_tokens,
        max_rationale_tokens=config.max_rationale_tokens,
        batch_size=config.eval_batch_size,
        bf16=bf16,
        desc=desc,
    )
