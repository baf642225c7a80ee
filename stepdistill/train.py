"""Student stage: fine-tune a small model on labels, and (DSS) on rationales too.

The modes (the paper's Table 2 / Section 4, and the recipes added since) are one table in
``modes.py``: standard, distill, dss, single, rationale-input, label-first. Every mode's
loss is the one in ``step_loss``:

    loss = L_label + λ · L_rationale

where each L is the mean cross-entropy over that task's target tokens in the step (a mode
without a rationale task has L_rationale = 0). The paper's code weighs
α·L_label + (1-α)·L_rationale with α = 0.5; that is (1+λ)^-1 times our loss with
λ = (1-α)/α = 1. AdamW is invariant to a constant scale of the loss (up to its ε and
gradient clipping), so λ = 1 trains like α = 0.5.

Speed on CPU: rows of a step are sorted by length and packed into micro-batches with
little padding (``packing.py``); the LM head runs only at target positions (no
full-vocabulary logits for the prompt); bf16 compute with fp32 master weights
(``master_weights.py``). The gradient equals that of the plain two-pass loss.
"""

from __future__ import annotations

import functools
import math
import random
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .checkpoint import device_rng_state, remove_checkpoints, restore_state, save_checkpoint
from .config import TrainConfig
from .data import Example, load_splits, require_splits
from .device import (
    additive_mask,
    compile_pays,
    compile_student,
    gradient_scaler,
    is_compiled,
    is_cuda,
    prepare_device,
    resolve_device,
    restore_attention,
    to_device,
    training_autocast,
    training_precision,
    uncompiled,
)
from .encode import is_seq2seq, pad_id, plain_lm_head
from .inference import check_candidates, for_inference, student_labels
from .io import new_run_dir, write_json, write_jsonl
from .lora import apply_lora
from .master_weights import MasterWeights
from .metrics import accuracy_rows
from .models import load_student
from .modes import LABEL, RATIONALE, get_mode
from .optimizer import make_optimizer, seed_everything
from .packing import IGNORE, collate, micro_batches, row_length, target_tokens
from .parallel import Processes, shard
from .run_folder import load_run, save_run_files
from .tasks import Task, load_task
from .tracking import start as start_tracking
from .training_data import (
    encode_example,
    evaluation_inputs,
    extra_examples,
    training_annotations,
    training_examples,
    training_pool,
)

# ----------------------------------------------------------------------------- loss


def token_losses(model: Any, batch: dict[str, Any], sparse_head: bool = True) -> tuple[Any, Any]:
    """Cross-entropy of every target token, and the kind (label / rationale) of each."""
    import torch.nn.functional as F

    labels, kinds = batch["labels"], batch["kinds"]
    inputs = {
        key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch
    }
    if is_seq2seq(model.config):
        logits = model(**inputs, labels=labels).logits
        select = labels != IGNORE
        losses = F.cross_entropy(logits[select].float(), labels[select], reduction="none")
        return losses, kinds[select]
    # Decoder-only: position t predicts token t+1. No KV cache: training never reads it
    # back, and building one costs copies (and graph breaks in a compiled student).
    inputs["use_cache"] = False
    if "attention_mask" in inputs:  # the packing's mask, as the attention adds it
        inputs["attention_mask"] = additive_mask(model, inputs["attention_mask"])
    targets = labels[:, 1:]
    select = targets != IGNORE
    if sparse_head and plain_lm_head(model):
        # Run the LM head only where the loss needs it: most positions are prompt.
        hidden = model.base_model(**inputs).last_hidden_state
        head = compiled_head_losses if is_compiled(model) else head_losses
        losses = head(model.get_output_embeddings(), hidden[:, :-1][select], targets[select])
        return losses, kinds[:, 1:][select]
    logits = model(**inputs).logits[:, :-1][select]
    return F.cross_entropy(logits.float(), targets[select], reduction="none"), kinds[:, 1:][select]


def head_losses(head: Any, hidden: Any, targets: Any) -> Any:
    """The LM head's logits at the selected positions, and their fp32 cross-entropy."""
    import torch.nn.functional as F

    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


@functools.cache
def _compiled_head_losses() -> Any:
    import torch

    return torch.compile(head_losses, dynamic=True)


def compiled_head_losses(head: Any, hidden: Any, targets: Any) -> Any:
    """``head_losses`` compiled (a student compiled for training): inductor fuses the fp32
    cast, the vocabulary's log-softmax and the target pick, forward and backward, which
    eager runs as separate passes over a 49,152-wide row per target token."""
    return _compiled_head_losses()(head, hidden, targets)


def step_loss(
    model: Any,
    groups: list[dict[str, Any]],
    rationale_weight: float,
    sparse_head: bool = True,
    backward: bool = True,
    token_counts: tuple[int, int] | None = None,
    autocast: Any = None,
    scaler: Any = None,
) -> dict[str, float]:
    """The paper's multi-task loss over one optimizer step, accumulated over micro-batches:

        loss = L_label + λ · L_rationale

    where each L is the mean token cross-entropy of its task in the whole step, so the
    sum of the micro-batch losses below is exactly that loss (and its gradient).

    Data parallel: ``token_counts`` are the label and rationale token counts of the
    whole global batch (all processes). Each process's sum is then its part of the
    global loss, and the sum of the processes' gradients is the global loss's gradient.

    ``autocast``: a context for the forward passes (a GPU's bf16 / fp16); ``scaler``: fp16's
    gradient scaler. The logged parts are summed on the device and read once per step
    (no host synchronisation per micro-batch)."""
    import contextlib

    import torch

    label_tokens, rationale_tokens = token_counts or target_tokens(groups)
    parts = []
    for group in groups:
        with autocast or contextlib.nullcontext():
            losses, kinds = token_losses(model, group, sparse_head)
        label_loss = losses[kinds == LABEL].sum() / max(label_tokens, 1)
        rationale_loss = losses[kinds == RATIONALE].sum() / max(rationale_tokens, 1)
        loss = label_loss + rationale_weight * rationale_loss
        if backward:
            (scaler.scale(loss) if scaler is not None else loss).backward()
        parts.append(torch.stack([loss, label_loss, rationale_loss]).detach())
    # One read of the step's parts (a host synchronisation per step, not per micro-batch),
    # summed in Python doubles as float(loss.item()) sums would be.
    values = torch.stack(parts).float().tolist() if parts else [[0.0, 0.0, 0.0]]
    summed = [sum(row[i] for row in values) for i in range(3)]
    return dict(zip(("loss", "label_loss", "rationale_loss"), summed, strict=True))


# ----------------------------------------------------------------------------- setup


def evaluate_split(
    model: Any,
    tokenizer: Any,
    task: Task,
    config: TrainConfig,
    examples: list[Example],
    processes: Processes,
    bf16: bool,
    desc: str | None = None,
) -> tuple[float, list[dict[str, Any]]]:
    """Accuracy and scored rows on a split. Under a multi-process launch each process
    generates for its slice of the examples and every process gets all the predictions
    (so all agree on the best step and on early stopping)."""
    mine = list(processes.share(examples))
    with uncompiled(model):  # a student compiled for training answers as it loads
        predictions = student_labels(model, tokenizer, task, config, mine, bf16, desc)
    return accuracy_rows(task, examples, processes.gather(predictions))


def train(
    config: TrainConfig,
    quiet: bool = False,
    resume: str | Path | None = None,
    task: Task | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train one student per the config into a new run folder; returns its metrics.

    ``task``: the config's task, already loaded (``run`` and ``sweep`` pass it down).
    ``device``: where to train instead of the config's ``device`` (a resumed run: instead
    of the device it was started on, which it keeps otherwise).
    With ``resume`` (a run folder), the run continues from its last checkpoint with its
    saved config and the same data order, and ends as an uninterrupted run would.

    Under ``accelerate launch`` / ``torchrun`` with N processes, each takes its share of
    every global batch of ``batch_size`` examples and the gradients are summed before the
    step, so the run is the same as in one process; rank 0 writes the run folder."""
    import torch

    started = time.time()
    if resume is not None:
        config = load_run(resume).config  # the run's own settings, its device included
    device = resolve_device(device or config.device)
    prepare_device(device)
    processes = Processes(device)
    quiet = quiet or not processes.main
    if config.threads:
        torch.set_num_threads(config.threads)
    mode = get_mode(config.mode)
    task = task or load_task(config.task)
    splits = load_splits(task, config.data_dir)
    require_splits(task, splits, ("train", "valid", "test"))
    annotations = training_annotations(config, task)
    extra = extra_examples(config)
    annotations.update({example.id: example.record for example in extra})

    pool = training_pool(config, splits["train"])
    items, skipped = training_examples(config, pool + extra, annotations, task)
    if not items:
        raise ValueError(f"no training examples for mode {config.mode} (skipped: {skipped})")
    # Limits are None (no limit) or >= 1 (the config checks), so they slice directly.
    valid = splits["valid"][
        : min(filter(None, (config.eval_limit, config.valid_limit)), default=None)
    ]
    test = splits["test"][: config.eval_limit]
    if mode.rationale_in_input:  # evaluation inputs carry the rationale too
        valid = evaluation_inputs(config, task, valid, "valid")
        test = evaluation_inputs(config, task, test, "test")

    if config.label_scoring == "candidates":  # before any training, not at the first validation
        check_candidates(task, valid + test)
    # The same seed in every process: the copies of the model (and LoRA's initial
    # adapters) are identical, and every process draws the same data order.
    seed_everything(config.seed)
    with processes.main_first():  # rank 0 converts a built-in student once
        model, tokenizer = load_student(config.student)
    model.to(device)
    lora = apply_lora(model, config) if config.lora_rank else None
    seq2seq = is_seq2seq(model.config)
    model.train()
    pad = pad_id(tokenizer)
    encoded = [encode_example(tokenizer, config, item, seq2seq) for item in items]
    sizes = [sum(row_length(r, seq2seq) for r in rows) for rows in encoded]

    steps_per_epoch = math.ceil(len(items) / config.batch_size)
    total_steps = config.max_steps or max(1, round(config.epochs * steps_per_epoch))
    eval_every = max(1, steps_per_epoch // max(1, config.evals_per_epoch))
    checkpoint_every = config.checkpoint_every or eval_every
    # null: bf16 only where the hardware has it (a GPU without it: fp16, gradient scaling)
    precision = training_precision(config.bf16, device)
    bf16 = precision == "bf16"
    # The CPU computes with bf16 parameters over fp32 master weights; a GPU keeps fp32
    # parameters and autocasts (device.py says why).
    weights = MasterWeights(model, bf16 and not is_cuda(device))
    autocast, scaler = training_autocast(device, precision), gradient_scaler(precision)
    if compile_pays(config.compile, model, device, bf16, lora is not None):
        compile_student(model)
    optimizer, scheduler = make_optimizer(weights.master, config, total_steps)

    rng = random.Random(config.seed)
    state: dict[str, Any] = {
        "step": 0,
        "order": [],
        "log": [],
        "history": [],
        "real_tokens": 0,
        "train_seconds": 0.0,
        "wall_seconds": 0.0,  # the run's wall time, as of its last checkpoint
        "evals_without_improvement": 0,
    }
    best: dict[str, Any] = {"accuracy": -1.0, "step": 0, "state": None}
    if resume is not None:
        run_dir = Path(resume)
        saved, best = restore_state(
            run_dir, weights, optimizer, scheduler, rng, processes, device, scaler
        )
        state = {key: saved.get(key, value) for key, value in state.items()}
        # wall time counts on from the checkpoint's; the time from it to the kill is
        # not counted, as the steps redone are not
        started -= state["wall_seconds"]
        if not quiet:
            tqdm.write(f"resuming {run_dir} at step {state['step']}")
    else:
        run_dir = None
        if processes.main:
            run_dir = new_run_dir(
                config.output_dir,
                config.run_name or f"{task.name}-{config.mode}-{time.strftime('%Y%m%d-%H%M%S')}",
            )
            save_run_files(run_dir, config, task)
        run_dir = processes.broadcast(run_dir)
    tracker = start_tracking(config, run_dir, processes.main, state["step"])  # report_to
    best_unsaved = False
    stopped_early = False
    bar = tqdm(
        range(state["step"], total_steps),
        desc=f"train {task.name}/{config.mode} ({precision})",  # why a run is fast or slow
        disable=quiet,
        initial=state["step"],
        total=total_steps,
    )
    for step in bar:
        if not state["order"]:  # a new epoch: a fresh shuffle of the examples
            state["order"] = list(range(len(items)))
            rng.shuffle(state["order"])
        batch_ids, state["order"] = (
            state["order"][: config.batch_size],
            state["order"][config.batch_size :],
        )
        # One process: the whole batch. Several: this process's share of it.
        rows = [row for i in shard(batch_ids, sizes, processes) for row in encoded[i]]
        groups = [
            collate(g, pad, seq2seq)
            for g in micro_batches(rows, config.micro_batch_tokens, seq2seq, config.pack_length)
        ]
        counts = target_tokens(groups)  # counted on the host, before the copy to the device
        groups = [to_device(group, device) for group in groups]
        tick = time.time()
        # Each loss term is normalised by its token count over the whole global batch.
        label_tokens, rationale_tokens, real_tokens = processes.sum(
            [*counts, sum(g["tokens"] for g in groups)]
        )
        totals = step_loss(
            model,
            groups,
            config.rationale_weight,
            token_counts=(label_tokens, rationale_tokens),
            autocast=autocast,
            scaler=scaler,
        )
        weights.gradients_to_master()
        # Sum the gradients (and the logged loss parts) over the processes: the gradient
        # of the global loss.
        totals = dict(
            zip(totals, processes.sum_gradients(weights.master, list(totals.values())), strict=True)
        )
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients
        torch.nn.utils.clip_grad_norm_(weights.master, config.max_grad_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        weights.master_to_model()
        state["train_seconds"] += time.time() - tick
        state["real_tokens"] += real_tokens
        state["step"] = step + 1
        state["log"].append(
            {
                "step": step + 1,
                **{k: round(v, 5) for k, v in totals.items()},
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.time() - tick, 3),
            }
        )
        bar.set_postfix(
            loss=f"{totals['loss']:.3f}",
            tok_s=f"{state['real_tokens'] / max(state['train_seconds'], 1e-9):.0f}",
        )

        if (step + 1) % eval_every == 0 or step + 1 == total_steps:
            accuracy, _ = evaluate_split(model, tokenizer, task, config, valid, processes, bf16)
            state["history"].append(
                {
                    "step": step + 1,
                    "epoch": round((step + 1) / steps_per_epoch, 3),
                    "valid_accuracy": accuracy,
                }
            )
            if not quiet:
                tqdm.write(f"step {step + 1}: valid accuracy {accuracy:.4f}")
            if accuracy > best["accuracy"]:  # keep the best-on-validation weights
                best = {"accuracy": accuracy, "step": step + 1, "state": weights.snapshot()}
                best_unsaved = True
                state["evals_without_improvement"] = 0
            else:
                state["evals_without_improvement"] += 1
            if processes.main:
                write_jsonl(run_dir / "train_log.jsonl", state["log"])
            tracker.sync(state["log"], state["history"])
            patience = config.early_stopping_patience
            if patience and state["evals_without_improvement"] >= patience:
                stopped_early = True  # every process saw the same accuracies, so all stop here
                if not quiet:
                    tqdm.write(
                        f"step {step + 1}: no better validation accuracy in {patience} evaluations; stopping"
                    )
                break
        if config.checkpoint and ((step + 1) % checkpoint_every == 0) and step + 1 < total_steps:
            # each process's (dropout) RNG: the CPU's, and the GPU's where it trains on one
            rng_states = processes.gather([device_rng_state(device)])
            if processes.main:
                save_checkpoint(
                    run_dir,
                    weights,
                    optimizer,
                    scheduler,
                    {
                        **state,
                        "wall_seconds": time.time() - started,
                        "python_rng": rng.getstate(),
                        "torch_rng": rng_states[0]["cpu"],
                        "torch_rng_per_process": rng_states,
                        **({"scaler": scaler.state_dict()} if scaler is not None else {}),
                    },
                    best if best_unsaved else None,
                )
            best_unsaved = False
    bar.close()

    weights.restore(model, best["state"])
    if lora is not None:
        model = lora.merge_and_unload()  # a plain transformers model: the run folder needs no peft
    restore_attention(model)  # a compiled student is saved with the attention it loaded with
    if processes.main:
        model.save_pretrained(run_dir / "model")
        tokenizer.save_pretrained(run_dir / "model")
    # The test set is evaluated once, with the best-on-validation weights, in the
    # precision a reloaded Student uses (inference.for_inference).
    for_inference(model, bf16)
    test_accuracy, test_rows = evaluate_split(
        model, tokenizer, task, config, test, processes, bf16, desc=None if quiet else "test"
    )
    metrics = {
        "task": task.name,
        "mode": config.mode,
        "student": config.student,
        "seed": config.seed,
        "train_examples": len(items),
        "train_rows": sum(len(rows) for rows in encoded),
        "skipped": skipped,
        "steps": state["step"],
        "best_step": best["step"],
        "valid_accuracy": best["accuracy"],
        "valid_history": state["history"],
        "test_accuracy": test_accuracy,
        "test_examples": len(test),
        "train_seconds": round(state["train_seconds"], 1),
        "tokens_per_second": round(state["real_tokens"] / max(state["train_seconds"], 1e-9), 1),
        "bf16": bf16,
        "precision": precision,
        "device": device,
        "wall_seconds": round(time.time() - started, 1),
        "run_dir": str(run_dir),
        **({"stopped_early": True} if stopped_early else {}),
        **({"processes": processes.world} if processes.world > 1 else {}),
        **({"requires_teacher_rationales": True} if mode.rationale_in_input else {}),
    }
    if processes.main:
        write_jsonl(run_dir / "predictions" / "test.jsonl", test_rows)
        write_json(run_dir / "metrics.json", metrics)
        write_jsonl(run_dir / "train_log.jsonl", state["log"])
        remove_checkpoints(run_dir)  # the model is saved: the resume state is not needed
    tracker.finish(state["log"], state["history"], metrics)
    processes.barrier()  # the others return once the run folder is complete
    return metrics
