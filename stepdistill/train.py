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
from dataclasses import dataclass, field
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
from .modes import LABEL, RATIONALE, Mode
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


# ----------------------------------------------------------------------------- the run
#
# train() = setup() -> fit() -> finish(). ``Trainer`` holds what the run fixes once (data,
# model, optimizer, schedule); ``LoopState`` what the loop changes and a checkpoint keeps.


@dataclass
class LoopState:
    """What one training run changes as it goes: saved in every checkpoint, restored on
    resume (the dict keys of ``checkpoint_state`` are the checkpoint's format)."""

    step: int = 0
    order: list[int] = field(default_factory=list)
    """The examples of the epoch not yet drawn, in their shuffled order."""
    log: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    """Validation accuracy after each evaluation."""
    real_tokens: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    """The run's wall time, as of its last checkpoint."""
    evals_without_improvement: int = 0
    best: dict[str, Any] = field(
        default_factory=lambda: {"accuracy": -1.0, "step": 0, "state": None}
    )
    """The best-on-validation weights so far: accuracy, step and a weights snapshot."""
    best_unsaved: bool = False
    stopped_early: bool = False

    CHECKPOINTED = (
        "step",
        "order",
        "log",
        "history",
        "real_tokens",
        "train_seconds",
        "wall_seconds",
        "evals_without_improvement",
    )

    def checkpoint_state(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.CHECKPOINTED}

    def restore(self, saved: dict[str, Any], best: dict[str, Any]) -> None:
        for key in self.CHECKPOINTED:
            if key in saved:
                setattr(self, key, saved[key])
        self.best = best


@dataclass
class Trainer:
    """What ``setup`` fixes for the whole run and ``fit`` / ``finish`` read."""

    config: TrainConfig
    task: Task
    mode: Mode
    device: str
    processes: Processes
    quiet: bool
    started: float
    """time.time() at the start (moved back by a resumed run's earlier wall time)."""
    items: list[Any]
    skipped: dict[str, int]
    encoded: list[list[dict[str, Any]]]
    """Each training example's encoded rows (its label row, its rationale row, ...)."""
    sizes: list[int]
    valid: list[Example]
    test: list[Example]
    model: Any
    tokenizer: Any
    lora: Any
    seq2seq: bool
    precision: str
    weights: MasterWeights
    autocast: Any
    scaler: Any
    optimizer: Any
    scheduler: Any
    rng: random.Random
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    checkpoint_every: int
    run_dir: Path | None = None
    tracker: Any = None

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"


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
    trainer, state = setup(config, quiet, resume, task, device)
    return finish(trainer, fit(trainer, state))


def training_split(
    config: TrainConfig, task: Task, mode: Mode
) -> tuple[list[Any], dict[str, int], list[Example], list[Example]]:
    """The mode's training items (and what was skipped), and the validation and test
    examples as the student will see them."""
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
    return items, skipped, valid, test


def setup(
    config: TrainConfig,
    quiet: bool = False,
    resume: str | Path | None = None,
    task: Task | None = None,
    device: str | None = None,
) -> tuple[Trainer, LoopState]:
    """Data, model, optimizer and the loop's state (restored from the last checkpoint of
    ``resume``); the run folder made (rank 0) and tracking started."""
    import torch

    started = time.time()
    if resume is not None:
        config = load_run(resume).config  # the run's own settings, its device included
    device = resolve_device(device or config.device)
    prepare_device(device)
    processes = Processes(device)
    if config.threads:
        torch.set_num_threads(config.threads)
    mode = config.mode_spec
    task = task or load_task(config.task)
    items, skipped, valid, test = training_split(config, task, mode)

    # The same seed in every process: the copies of the model (and LoRA's initial
    # adapters) are identical, and every process draws the same data order.
    seed_everything(config.seed)
    with processes.main_first():  # rank 0 converts a built-in student once
        model, tokenizer = load_student(config.student)
    model.to(device)
    lora = apply_lora(model, config) if config.lora_rank else None
    seq2seq = is_seq2seq(model.config)
    model.train()
    encoded = [encode_example(tokenizer, config, item, seq2seq) for item in items]

    steps_per_epoch = math.ceil(len(items) / config.batch_size)
    total_steps = config.max_steps or max(1, round(config.epochs * steps_per_epoch))
    eval_every = max(1, steps_per_epoch // max(1, config.evals_per_epoch))
    # null: bf16 only where the hardware has it (a GPU without it: fp16, gradient scaling)
    precision = training_precision(config.bf16, device)
    # The CPU computes with bf16 parameters over fp32 master weights; a GPU keeps fp32
    # parameters and autocasts (device.py says why).
    weights = MasterWeights(model, precision == "bf16" and not is_cuda(device))
    if compile_pays(config.compile, model, device, precision == "bf16", lora is not None):
        compile_student(model)
    optimizer, scheduler = make_optimizer(weights.master, config, total_steps)
    trainer = Trainer(
        config=config,
        task=task,
        mode=mode,
        device=device,
        processes=processes,
        quiet=quiet or not processes.main,
        started=started,
        items=items,
        skipped=skipped,
        encoded=encoded,
        sizes=[sum(row_length(r, seq2seq) for r in rows) for rows in encoded],
        valid=valid,
        test=test,
        model=model,
        tokenizer=tokenizer,
        lora=lora,
        seq2seq=seq2seq,
        precision=precision,
        weights=weights,
        autocast=training_autocast(device, precision),
        scaler=gradient_scaler(precision),
        optimizer=optimizer,
        scheduler=scheduler,
        rng=random.Random(config.seed),
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        eval_every=eval_every,
        checkpoint_every=config.checkpoint_every or eval_every,
    )
    return trainer, start_run(trainer, resume)


def start_run(trainer: Trainer, resume: str | Path | None) -> LoopState:
    """A new run folder (rank 0) and a fresh loop state, or the loop state of ``resume``'s
    last checkpoint (its weights, optimizer and RNGs restored); tracking started."""
    state = LoopState()
    if resume is not None:
        trainer.run_dir = Path(resume)
        state.restore(
            *restore_state(
                trainer.run_dir,
                trainer.weights,
                trainer.optimizer,
                trainer.scheduler,
                trainer.rng,
                trainer.processes,
                trainer.device,
                trainer.scaler,
            )
        )
        # wall time counts on from the checkpoint's; the time from it to the kill is
        # not counted, as the steps redone are not
        trainer.started -= state.wall_seconds
        if not trainer.quiet:
            tqdm.write(f"resuming {trainer.run_dir} at step {state.step}")
    else:
        if trainer.processes.main:
            trainer.run_dir = new_run_dir(
                trainer.config.output_dir,
                trainer.config.run_name
                or f"{trainer.task.name}-{trainer.config.mode}-{time.strftime('%Y%m%d-%H%M%S')}",
            )
            save_run_files(trainer.run_dir, trainer.config, trainer.task)
        trainer.run_dir = trainer.processes.broadcast(trainer.run_dir)
    trainer.tracker = start_tracking(
        trainer.config, trainer.run_dir, trainer.processes.main, state.step
    )
    return state


def fit(trainer: Trainer, state: LoopState) -> LoopState:
    """The loop: a step, then (on schedule) a validation and a checkpoint, until the last
    step or early stopping."""
    bar = tqdm(
        range(state.step, trainer.total_steps),
        desc=f"train {trainer.task.name}/{trainer.config.mode} ({trainer.precision})",
        disable=trainer.quiet,  # the precision in the bar: why a run is fast or slow
        initial=state.step,
        total=trainer.total_steps,
    )
    for step in bar:
        totals = train_step(trainer, state)
        bar.set_postfix(
            loss=f"{totals['loss']:.3f}",
            tok_s=f"{state.real_tokens / max(state.train_seconds, 1e-9):.0f}",
        )
        if (step + 1) % trainer.eval_every == 0 or step + 1 == trainer.total_steps:
            validate(trainer, state)
            if state.stopped_early:
                break
        if trainer.config.checkpoint and (step + 1) % trainer.checkpoint_every == 0:
            if step + 1 < trainer.total_steps:
                checkpoint(trainer, state)
    bar.close()
    return state


def train_step(trainer: Trainer, state: LoopState) -> dict[str, float]:
    """One optimizer step over the next ``batch_size`` examples; its logged loss parts."""
    import torch

    config, processes = trainer.config, trainer.processes
    if not state.order:  # a new epoch: a fresh shuffle of the examples
        state.order = list(range(len(trainer.items)))
        trainer.rng.shuffle(state.order)
    batch_ids, state.order = state.order[: config.batch_size], state.order[config.batch_size :]
    # One process: the whole batch. Several: this process's share of it.
    rows = [row for i in shard(batch_ids, trainer.sizes, processes) for row in trainer.encoded[i]]
    pad = pad_id(trainer.tokenizer)
    groups = [
        collate(g, pad, trainer.seq2seq)
        for g in micro_batches(rows, config.micro_batch_tokens, trainer.seq2seq, config.pack_length)
    ]
    counts = target_tokens(groups)  # counted on the host, before the copy to the device
    groups = [to_device(group, trainer.device) for group in groups]
    tick = time.time()
    # Each loss term is normalised by its token count over the whole global batch.
    label_tokens, rationale_tokens, real_tokens = processes.sum(
        [*counts, sum(g["tokens"] for g in groups)]
    )
    totals = step_loss(
        trainer.model,
        groups,
        config.rationale_weight,
        token_counts=(label_tokens, rationale_tokens),
        autocast=trainer.autocast,
        scaler=trainer.scaler,
    )
    weights, optimizer, scaler = trainer.weights, trainer.optimizer, trainer.scaler
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
    trainer.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    weights.master_to_model()
    state.train_seconds += time.time() - tick
    state.real_tokens += real_tokens
    state.step += 1
    state.log.append(
        {
            "step": state.step,
            **{k: round(v, 5) for k, v in totals.items()},
            "lr": trainer.scheduler.get_last_lr()[0],
            "seconds": round(time.time() - tick, 3),
        }
    )
    return totals


def validate(trainer: Trainer, state: LoopState) -> None:
    """Validation accuracy now: keep the best weights, count toward early stopping."""
    t = trainer
    accuracy, _ = evaluate_split(
        t.model, t.tokenizer, t.task, t.config, t.valid, t.processes, t.bf16
    )
    state.history.append(
        {
            "step": state.step,
            "epoch": round(state.step / t.steps_per_epoch, 3),
            "valid_accuracy": accuracy,
        }
    )
    if not t.quiet:
        tqdm.write(f"step {state.step}: valid accuracy {accuracy:.4f}")
    if accuracy > state.best["accuracy"]:  # keep the best-on-validation weights
        state.best = {"accuracy": accuracy, "step": state.step, "state": t.weights.snapshot()}
        state.best_unsaved = True
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    if t.processes.main:
        write_jsonl(t.run_dir / "train_log.jsonl", state.log)
    t.tracker.sync(state.log, state.history)
    patience = t.config.early_stopping_patience
    if patience and state.evals_without_improvement >= patience:
        state.stopped_early = True  # every process saw the same accuracies, so all stop here
        if not t.quiet:
            tqdm.write(
                f"step {state.step}: no better validation accuracy in {patience} evaluations; stopping"
            )


def checkpoint(trainer: Trainer, state: LoopState) -> None:
    """Save what a resumed run needs (rank 0): weights, optimizer, RNGs, the loop state."""
    t = trainer
    # each process's (dropout) RNG: the CPU's, and the GPU's where it trains on one
    rng_states = t.processes.gather([device_rng_state(t.device)])
    if t.processes.main:
        save_checkpoint(
            t.run_dir,
            t.weights,
            t.optimizer,
            t.scheduler,
            {
                **state.checkpoint_state(),
                "wall_seconds": time.time() - t.started,
                "python_rng": t.rng.getstate(),
                "torch_rng": rng_states[0]["cpu"],
                "torch_rng_per_process": rng_states,
                **({"scaler": t.scaler.state_dict()} if t.scaler is not None else {}),
            },
            state.best if state.best_unsaved else None,
        )
    state.best_unsaved = False


def finish(trainer: Trainer, state: LoopState) -> dict[str, Any]:
    """The best-on-validation weights saved, tested once, and the run's metrics written."""
    t, processes = trainer, trainer.processes
    t.weights.restore(t.model, state.best["state"])
    model = t.model
    if t.lora is not None:
        model = (
            t.lora.merge_and_unload()
        )  # a plain transformers model: the run folder needs no peft
    restore_attention(model)  # a compiled student is saved with the attention it loaded with
    if processes.main:
        model.save_pretrained(t.run_dir / "model")
        t.tokenizer.save_pretrained(t.run_dir / "model")
    # The test set is evaluated once, with the best-on-validation weights, in the
    # precision a reloaded Student uses (inference.for_inference).
    for_inference(model, t.bf16)
    test_accuracy, test_rows = evaluate_split(
        model,
        t.tokenizer,
        t.task,
        t.config,
        t.test,
        processes,
        t.bf16,
        desc=None if t.quiet else "test",
    )
    metrics = {
        "task": t.task.name,
        "mode": t.config.mode,
        "student": t.config.student,
        "seed": t.config.seed,
        "train_examples": len(t.items),
        "train_rows": sum(len(rows) for rows in t.encoded),
        "skipped": t.skipped,
        "steps": state.step,
        "best_step": state.best["step"],
        "valid_accuracy": state.best["accuracy"],
        "valid_history": state.history,
        "test_accuracy": test_accuracy,
        "test_examples": len(t.test),
        "train_seconds": round(state.train_seconds, 1),
        "tokens_per_second": round(state.real_tokens / max(state.train_seconds, 1e-9), 1),
        "bf16": t.bf16,
        "precision": t.precision,
        "device": t.device,
        "wall_seconds": round(time.time() - t.started, 1),
        "run_dir": str(t.run_dir),
        **({"stopped_early": True} if state.stopped_early else {}),
        **({"processes": processes.world} if processes.world > 1 else {}),
        **({"requires_teacher_rationales": True} if t.mode.rationale_in_input else {}),
    }
    if processes.main:
        write_jsonl(t.run_dir / "predictions" / "test.jsonl", test_rows)
        write_json(t.run_dir / "metrics.json", metrics)
        write_jsonl(t.run_dir / "train_log.jsonl", state.log)
        remove_checkpoints(t.run_dir)  # the model is saved: the resume state is not needed
    t.tracker.finish(state.log, state.history, metrics)
    processes.barrier()  # the others return once the run folder is complete
    return metrics
