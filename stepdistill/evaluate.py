"""Evaluate a student: generate labels (batched greedy decoding) and score them.

``evaluate(run_dir)`` reloads a finished run's model and recomputes its metrics.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .encode import LABEL_PREFIX, RATIONALE_PREFIX, encode_prompt, label_from_single
from .metrics import is_correct
from .tasks import Task, normalize_label


def autocast(enabled: bool | None) -> Any:
    """bf16 autocast when ``enabled`` (None: when the CPU computes bf16 natively)."""
    import torch

    from .precision import use_bf16

    return (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if use_bf16(enabled)
        else contextlib.nullcontext()
    )


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 32,
    bf16: bool | None = None,
    desc: str | None = None,
    strip: bool = True,
) -> list[str]:
    """Greedy decoding with the KV cache, batched by similar length, stopping at EOS.

    ``strip=False`` keeps the continuation's leading space (raw completions need it)."""
    import torch

    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.inference_mode(), autocast(bf16):
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
            input_ids = torch.tensor(rows)
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=torch.tensor(mask),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = generated if seq2seq else generated[:, width:]
            for i, tokens in zip(batch, new_tokens, strict=True):
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                outputs[i] = text.strip() if strip else text
    model.train(was_training)
    return outputs


def predict(
    model: Any,
    tokenizer: Any,
    task: Task,
    inputs: list[str],
    mode: str = "dss",
    rationale: bool = False,
    max_input_tokens: int = 256,
    max_rationale_tokens: int = 128,
    batch_size: int = 32,
    bf16: bool | None = None,
    desc: str | None = None,
) -> list[dict[str, Any]]:
    """Labels (and rationales when asked) for formatted task inputs."""
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    prompts = [
        encode_prompt(tokenizer, LABEL_PREFIX, text, max_input_tokens, seq2seq) for text in inputs
    ]
    if mode == "single":
        # One target holds the rationale then the label: generate both, read the label.
        raw = generate(
            model,
            tokenizer,
            prompts,
            max_rationale_tokens + task.max_label_tokens + 8,
            batch_size,
            bf16,
            desc,
        )
        results = [
            {"prediction": _normal(task, label_from_single(text)), "raw": text} for text in raw
        ]
    else:
        raw = generate(model, tokenizer, prompts, task.max_label_tokens, batch_size, bf16, desc)
        results = [{"prediction": _normal(task, text), "raw": text} for text in raw]
    if rationale and mode != "single":
        rationale_prompts = [
            encode_prompt(tokenizer, RATIONALE_PREFIX, t, max_input_tokens, seq2seq) for t in inputs
        ]
        for result, text in zip(
            results,
            generate(model, tokenizer, rationale_prompts, max_rationale_tokens, batch_size, bf16),
            strict=True,
        ):
            result["rationale"] = text
    return results


def _normal(task: Task, text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    return normalize_label(text, task.normalize)


def score(
    task: Task, examples: list[Any], predictions: list[dict[str, Any]]
) -> tuple[float, list[dict[str, Any]]]:
    """Accuracy and per-example rows (id, input, gold, prediction, raw, correct)."""
    rows = []
    for example, prediction in zip(examples, predictions, strict=True):
        rows.append(
            {
                "id": example.id,
                "input": example.input,
                "gold": example.label,
                "prediction": prediction["prediction"],
                "raw": prediction["raw"],
                **({"rationale": prediction["rationale"]} if "rationale" in prediction else {}),
                "correct": is_correct(task, prediction["prediction"], example.label),
            }
        )
    labelled = [row for row in rows if row["gold"] is not None]
    accuracy = sum(row["correct"] for row in labelled) / len(labelled) if labelled else float("nan")
    return accuracy, rows


def evaluate(
    run_dir: str | Path, split: str = "test", limit: int | None = None, rescore: bool = False
) -> dict[str, Any]:
    """Recompute a run's metrics: regenerate predictions from its saved model (or, with
    ``rescore``, re-score its saved predictions) and write ``eval-<split>.json``."""
    from .data import load_splits
    from .io import read_jsonl, write_json, write_jsonl
    from .run_folder import load_run

    run = load_run(run_dir)
    task, config = run.task, run.config
    if rescore:
        rows = read_jsonl(Path(run_dir) / "predictions" / f"{split}.jsonl")
        for row in rows:
            row["correct"] = is_correct(task, row["prediction"], row["gold"])
        labelled = [row for row in rows if row["gold"] is not None]
        accuracy = sum(row["correct"] for row in labelled) / max(1, len(labelled))
    else:
        from .students import load_student

        examples = load_splits(task, config.data_dir)[split]
        examples = examples[:limit] if limit else examples
        if config.mode == "rationale-input":
            from .train import evaluation_inputs

            examples = evaluation_inputs(config, task, examples, split)
        model, tokenizer = load_student(str(Path(run_dir) / "model"))
        predictions = predict(
            model,
            tokenizer,
            task,
            [e.input for e in examples],
            config.mode,
            max_input_tokens=config.max_input_tokens,
            max_rationale_tokens=config.max_rationale_tokens,
            batch_size=config.eval_batch_size,
            bf16=config.bf16,
            desc=f"evaluate {split}",
        )
        accuracy, rows = score(task, examples, predictions)
        write_jsonl(Path(run_dir) / "eval" / f"{split}.jsonl", rows)
    result = {
        "run": str(run_dir),
        "split": split,
        "examples": len(rows),
        "accuracy": accuracy,
        "rescored": rescore,
    }
    write_json(Path(run_dir) / "eval" / f"{split}-metrics.json", result)
    return result
