"""Student stage: fine-tune a small model on labels, and (DSS) on rationales too.

Modes (the paper's Table 2 / Section 4):
  standard  [label] x -> gold label                      loss = L_label
  distill   [label] x -> teacher label                   loss = L_label
  dss       [label] x -> label, [rationale] x -> r       loss = L_label + λ·L_rationale
  single    [label] x -> "r\\nAnswer: label" (one target) loss = L_label

Each loss term is the mean cross-entropy over that task's target tokens in the step.
The paper's code weighs α·L_label + (1-α)·L_rationale with α = 0.5; that is
(1+λ)^-1 times our loss with λ = (1-α)/α = 1. AdamW is invariant to a constant
scale of the loss (up to its ε and gradient clipping), so λ = 1 trains like α = 0.5.

Speed on CPU: rows of a step are sorted by length and packed into micro-batches with
little padding; the LM head runs only at target positions (no full-vocabulary logits
for the prompt); bf16 compute with fp32 master weights. The gradient equals that of
the plain two-pass loss.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .annotate import annotate, load_annotations
from .config import TrainConfig
from .data import Example, load_splits, require_splits
from .encode import (
    LABEL,
    LABEL_PREFIX,
    RATIONALE,
    RATIONALE_INPUT_MARKER,
    RATIONALE_PREFIX,
    EncodedRow,
    encode_prompt,
    encode_target,
    single_target,
)
from .evaluate import predict, score
from .io import new_run_dir, read_jsonl, write_json, write_jsonl
from .parallel import Processes, shard
from .precision import use_bf16
from .run_folder import save_run_files
from .tasks import Task, load_task

IGNORE = -100


# ----------------------------------------------------------------------------- data


@dataclass
class TrainingExample:
    """An example's label target and (where available) rationale target."""

    example: Example
    label: str
    rationale: str | None


RATIONALE_MODES = ("dss", "single", "rationale-input")


def uses_teacher_labels(config: TrainConfig) -> bool:
    return config.mode == "distill" or (
        config.mode in RATIONALE_MODES and config.label_source == "teacher"
    )


def rationale_for(
    config: TrainConfig, task: Task, example: Example, note: dict[str, Any]
) -> str | None:
    """The rationale a mode trains on: the teacher's, or the dataset's human-written one."""
    if config.mode not in RATIONALE_MODES:
        return None
    if config.rationale_source == "human":
        if not task.human_rationale_field:
            raise ValueError(f"task {task.name} has no human rationales (no human_rationale_field)")
        value = example.record.get(task.human_rationale_field)
        return str(value).strip() or None if value else None
    return note.get("rationale")


def with_rationale_input(example: Example, rationale: str | None) -> Example:
    """rationale-input mode: the rationale becomes part of the input (the paper's Eq. 2)."""
    if not rationale:
        return example
    return dataclasses.replace(example, input=f"{example.input}{RATIONALE_INPUT_MARKER}{rationale}")


def training_examples(
    config: TrainConfig,
    examples: list[Example],
    annotations: dict[str, dict[str, Any]],
    task: Task | None = None,
) -> tuple[list[TrainingExample], dict[str, int]]:
    """Pick each example's targets for the mode; count what had to be skipped and why."""
    task = task or load_task(config.task)
    teacher_labels = uses_teacher_labels(config)
    chosen: list[TrainingExample] = []
    skipped = {"no_label": 0, "no_rationale": 0}
    for example in examples:
        note = annotations.get(example.id, {})
        label = note.get("teacher_label") if teacher_labels else example.label
        if label is None and example.source_split == "extra":
            label = note.get("teacher_label")  # extra unlabeled inputs: the teacher's label
        if label is None:
            skipped["no_label"] += 1  # e.g. an unparseable teacher output: never guessed
            continue
        rationale = rationale_for(config, task, example, note)
        if config.mode in RATIONALE_MODES and not rationale:
            skipped["no_rationale"] += 1  # still trained on its label
        if config.mode == "rationale-input":
            example, rationale = with_rationale_input(example, rationale), None
        chosen.append(TrainingExample(example, label, rationale))
    return chosen, skipped


def training_pool(config: TrainConfig, train_split: list[Example]) -> list[Example]:
    """A fixed subsample per seed (``train_fraction``, then ``train_limit``), the same for
    every mode: data-size curves compare like with like."""
    pool = list(train_split)
    random.Random(config.seed).shuffle(pool)
    pool = pool[: max(1, round(len(pool) * config.train_fraction))]
    if config.train_limit:
        pool = pool[: config.train_limit]
    return pool


def extra_examples(config: TrainConfig, task: Task) -> list[Example]:
    """Unlabeled inputs annotated by a teacher, as examples (ids prefixed ``extra-``)."""
    if not config.extra_annotations:
        return []
    path = Path(config.extra_annotations)
    path = path / "train.jsonl" if path.is_dir() else path
    return [
        Example(f"extra-{row['id']}", "train", row["input"], None, "extra", index, row)
        for index, row in enumerate(read_jsonl(path))
    ]


def encode_example(
    tokenizer: Any, config: TrainConfig, item: TrainingExample, seq2seq: bool
) -> list[EncodedRow]:
    """The rows one example contributes to a step (two for dss)."""
    text = item.example.input

    def row(prefix: str, target: str, kind: int, max_target: int) -> EncodedRow:
        return EncodedRow(
            encode_prompt(tokenizer, prefix, text, config.max_input_tokens, seq2seq),
            encode_target(tokenizer, target, max_target),
            kind,
        )

    if config.mode == "single":
        target = single_target(item.rationale, item.label)
        return [row(LABEL_PREFIX, target, LABEL, config.max_rationale_tokens + 64)]
    rows = [row(LABEL_PREFIX, item.label, LABEL, 64)]
    if config.mode == "dss" and item.rationale:
        rows.append(row(RATIONALE_PREFIX, item.rationale, RATIONALE, config.max_rationale_tokens))
    return rows


def row_length(row: EncodedRow, seq2seq: bool) -> int:
    return max(len(row.prompt), len(row.target)) if seq2seq else len(row.prompt) + len(row.target)


def pack(rows: list[EncodedRow], capacity: int) -> list[list[EncodedRow]]:
    """First-fit decreasing: rows go into sequences of at most ``capacity`` tokens
    (a longer row gets a sequence of its own). No padding inside a sequence."""
    bins: list[list[EncodedRow]] = []
    fill: list[int] = []
    for row in sorted(rows, key=lambda r: -row_length(r, False)):
        size = row_length(row, False)
        for index, used in enumerate(fill):
            if used + size <= capacity:
                bins[index].append(row)
                fill[index] += size
                break
        else:
            bins.append([row])
            fill.append(size)
    return bins


def micro_batches(
    rows: list[EncodedRow], token_budget: int, seq2seq: bool, pack_length: int = 0
) -> list[list[list[EncodedRow]]]:
    """Split one step's rows into forward passes of at most ``token_budget`` padded tokens.

    Each pass is a list of sequences; a sequence holds one row, or (decoder-only with
    ``pack_length``) several rows packed end to end. Sequences are length-sorted, so
    padding stays small; the gradient is the same as one big batch's."""
    sequences = pack(rows, pack_length) if pack_length and not seq2seq else [[r] for r in rows]

    def length(sequence: list[EncodedRow]) -> int:
        return (
            sum(row_length(r, seq2seq) for r in sequence)
            if not seq2seq
            else row_length(sequence[0], True)
        )

    groups: list[list[list[EncodedRow]]] = []
    current: list[list[EncodedRow]] = []
    for sequence in sorted(sequences, key=length):
        if current and length(sequence) * (len(current) + 1) > token_budget:
            groups.append(current)
            current = []
        current.append(sequence)
    if current:
        groups.append(current)
    return groups


def collate(sequences: list[list[EncodedRow]], pad: int, seq2seq: bool) -> dict[str, Any]:
    """Right-padded tensors. ``labels`` hold target token ids (IGNORE elsewhere) and
    ``kinds`` say, token by token, which loss term (label / rationale) a target feeds.

    Decoder-only sequences may pack several rows: each row restarts its positions and
    attends only to itself (a block-diagonal causal mask), so packing changes nothing
    but the speed."""
    import torch

    if seq2seq:
        rows = [sequence[0] for sequence in sequences]
        width = max(len(r.prompt) for r in rows)
        target_width = max(len(r.target) for r in rows)
        return {
            "input_ids": torch.tensor([r.prompt + [pad] * (width - len(r.prompt)) for r in rows]),
            "attention_mask": torch.tensor(
                [[1] * len(r.prompt) + [0] * (width - len(r.prompt)) for r in rows]
            ),
            "labels": torch.tensor(
                [r.target + [IGNORE] * (target_width - len(r.target)) for r in rows]
            ),
            "kinds": torch.tensor([[r.kind] * target_width for r in rows]),
            "tokens": sum(len(r.prompt) + len(r.target) for r in rows),
        }
    width = max(sum(len(r.prompt) + len(r.target) for r in sequence) for sequence in sequences)
    ids, positions, segments, labels, kinds = [], [], [], [], []
    for sequence in sequences:
        row_ids, row_positions, row_segments, row_labels, row_kinds = [], [], [], [], []
        for index, r in enumerate(sequence):
            length = len(r.prompt) + len(r.target)
            row_ids += r.prompt + r.target
            row_positions += list(range(length))
            row_segments += [index] * length
            row_labels += [IGNORE] * len(r.prompt) + r.target
            row_kinds += [r.kind] * length
        padding = width - len(row_ids)
        ids.append(row_ids + [pad] * padding)
        positions.append(row_positions + list(range(padding)))
        segments.append(row_segments + [-1] * padding)  # padding attends only to padding
        labels.append(row_labels + [IGNORE] * padding)
        kinds.append(row_kinds + [LABEL] * padding)
    segment = torch.tensor(segments)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    batch: dict[str, Any] = {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "kinds": torch.tensor(kinds),
        "tokens": sum(len(r.prompt) + len(r.target) for sequence in sequences for r in sequence),
    }
    if all(len(sequence) == 1 for sequence in sequences):
        batch["attention_mask"] = (segment >= 0).long()  # plain padding mask
    else:
        batch["attention_mask"] = ((segment[:, :, None] == segment[:, None, :]) & causal)[:, None]
        batch["position_ids"] = torch.tensor(positions)
    return batch


# ----------------------------------------------------------------------------- loss


def token_losses(model: Any, batch: dict[str, Any], sparse_head: bool = True) -> tuple[Any, Any]:
    """Cross-entropy of every target token, and the kind (label / rationale) of each."""
    import torch.nn.functional as F

    labels, kinds = batch["labels"], batch["kinds"]
    inputs = {
        key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch
    }
    if getattr(model.config, "is_encoder_decoder", False):
        logits = model(**inputs, labels=labels).logits
        select = labels != IGNORE
        return F.cross_entropy(logits[select].float(), labels[select], reduction="none"), kinds[
            select
        ]
    # Decoder-only: position t predicts token t+1.
    targets = labels[:, 1:]
    select = targets != IGNORE
    if sparse_head and can_use_sparse_head(model):
        # Run the LM head only where the loss needs it: most positions are prompt.
        hidden = model.base_model(**inputs).last_hidden_state
        logits = model.get_output_embeddings()(hidden[:, :-1][select])
    else:
        logits = model(**inputs).logits[:, :-1][select]
    return F.cross_entropy(logits.float(), targets[select], reduction="none"), kinds[:, 1:][select]


def can_use_sparse_head(model: Any) -> bool:
    """Models that post-process logits (soft-capping, scaling) take the plain path."""
    config = model.config
    plain = not any(
        getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale")
    )
    return plain and model.get_output_embeddings() is not None and model.base_model is not model


def target_tokens(groups: list[dict[str, Any]]) -> tuple[int, int]:
    """How many label and rationale target tokens the micro-batches hold."""
    label = sum(int(((g["labels"] != IGNORE) & (g["kinds"] == LABEL)).sum()) for g in groups)
    rationale = sum(
        int(((g["labels"] != IGNORE) & (g["kinds"] == RATIONALE)).sum()) for g in groups
    )
    return label, rationale


def step_loss(
    model: Any,
    groups: list[dict[str, Any]],
    rationale_weight: float,
    sparse_head: bool = True,
    backward: bool = True,
    token_counts: tuple[int, int] | None = None,
) -> dict[str, float]:
    """The paper's multi-task loss over one optimizer step, accumulated over micro-batches:

        loss = L_label + λ · L_rationale

    where each L is the mean token cross-entropy of its task in the whole step, so the
    sum of the micro-batch losses below is exactly that loss (and its gradient).

    Data parallel: ``token_counts`` are the label and rationale token counts of the
    whole global batch (all processes). Each process's sum is then its part of the
    global loss, and the sum of the processes' gradients is the global loss's gradient."""
    label_tokens, rationale_tokens = (
        token_counts if token_counts is not None else target_tokens(groups)
    )
    totals = {"loss": 0.0, "label_loss": 0.0, "rationale_loss": 0.0}
    for group in groups:
        losses, kinds = token_losses(model, group, sparse_head)
        label_loss = losses[kinds == LABEL].sum() / max(label_tokens, 1)
        rationale_loss = losses[kinds == RATIONALE].sum() / max(rationale_tokens, 1)
        loss = label_loss + rationale_weight * rationale_loss
        if backward:
            loss.backward()
        totals["loss"] += loss.item()
        totals["label_loss"] += label_loss.item()
        totals["rationale_loss"] += rationale_loss.item()
    return totals


# ----------------------------------------------------------------------------- loop


class MasterWeights:
    """bf16 compute with fp32 master weights: the model runs in bf16 (faster on CPU than
    bf16 autocast over fp32 weights, which re-casts every weight in every pass), while
    the optimizer updates fp32 copies so small updates are not lost to bf16 rounding.
    With ``enabled=False`` the model's own fp32 parameters are the master weights."""

    def __init__(self, model: Any, enabled: bool):
        import torch

        self.enabled = enabled
        self.named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.frozen: dict[str, Any] = {}
        if enabled:
            self.master = [p.detach().float().clone() for _, p in self.named]
            # Frozen weights (LoRA's base model) keep an fp32 copy too: the saved model must
            # not carry them rounded to bf16.
            self.frozen = {
                name: p.detach().float().clone()
                for name, p in model.named_parameters()
                if not p.requires_grad
            }
            # Parameters only (not the rotary buffers), as the Student does at inference.
            from .student import cast_parameters

            cast_parameters(model, torch.bfloat16)
        else:
            self.master = [p for _, p in self.named]

    def gradients_to_master(self) -> None:
        if self.enabled:
            for (_, p), master in zip(self.named, self.master, strict=True):
                master.grad = None if p.grad is None else p.grad.float()
                p.grad = None

    def master_to_model(self) -> None:
        import torch

        if self.enabled:
            with torch.no_grad():
                for (_, p), master in zip(self.named, self.master, strict=True):
                    p.copy_(master)

    def snapshot(self) -> dict[str, Any]:
        return {
            name: master.detach().clone()
            for (name, _), master in zip(self.named, self.master, strict=True)
        }

    def restore(self, model: Any, snapshot: dict[str, Any]) -> None:
        """Put fp32 weights from a snapshot into the model (in fp32, for saving)."""
        import torch

        model.float()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in snapshot:
                    p.copy_(snapshot[name])
                elif name in self.frozen:
                    p.copy_(self.frozen[name])


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def apply_lora(model: Any, config: TrainConfig) -> Any:
    """LoRA adapters (``config.lora_rank`` > 0): the base weights freeze and only the
    adapters train. The adapters are injected into ``model`` in place, so training goes
    on with ``model`` itself (the loss reads its LM head directly); the returned peft
    wrapper is kept to merge the adapters back before saving."""
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError:
        raise ValueError("lora_rank > 0 needs peft: pip install 'stepdistill[lora]'") from None
    from .students import is_seq2seq

    targets = config.lora_target_modules.strip()
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=targets
        if targets == "all-linear"
        else [name.strip() for name in targets.split(",") if name.strip()],
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq(model.config) else TaskType.CAUSAL_LM,
    )
    wrapper = get_peft_model(model, lora)
    assert wrapper.get_base_model() is model
    return wrapper


def ensure_annotations(config: TrainConfig, task: Task) -> Path:
    """The folder of the teacher's rationale dataset; made with ``config.teacher`` when no
    folder was given and the default one does not exist yet."""
    directory = (
        Path(config.annotations)
        if config.annotations
        else Path("annotations") / f"{task.name}-{config.teacher}"
    )
    if not (directory / "train.jsonl").is_file():
        if config.annotations:
            raise FileNotFoundError(
                f"{directory}/train.jsonl not found: run `stepdistill annotate` first"
            )
        annotate(task, config.teacher, directory, data=config.data_dir)
    return directory


def prepare_annotations(config: TrainConfig, task: Task) -> dict[str, dict[str, Any]]:
    """The teacher's rationales and labels for the training split (none needed for
    standard, or for human rationales with gold labels)."""
    if config.mode == "standard" or (
        config.rationale_source == "human" and not uses_teacher_labels(config)
    ):
        return {}
    return load_annotations(ensure_annotations(config, task), "train")


def evaluation_inputs(
    config: TrainConfig, task: Task, examples: list[Example], split: str
) -> list[Example]:
    """rationale-input mode at evaluation: x plus the teacher's rationale for that example."""
    notes = (
        {}
        if config.rationale_source == "human"
        else load_annotations(ensure_annotations(config, task), split)
    )
    return [
        with_rationale_input(e, rationale_for(config, task, e, notes.get(e.id, {})))
        for e in examples
    ]


def save_checkpoint(
    run_dir: Path,
    weights: MasterWeights,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
    best: dict[str, Any] | None,
) -> None:
    """Everything needed to continue: weights, optimizer, scheduler, RNG, data position.
    Written to a temporary folder and renamed, so a kill never leaves half a checkpoint."""
    import shutil

    import torch

    if best is not None:  # only when it changed: the best weights are as large as the model
        tmp = run_dir / "best-weights.pt.tmp"
        torch.save(best, tmp)
        tmp.replace(run_dir / "best-weights.pt")
    staging = run_dir / "checkpoint.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    torch.save(
        {
            "master": weights.snapshot(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            **state,
        },
        staging / "state.pt",
    )
    old = run_dir / "checkpoint.old"
    if (run_dir / "checkpoint").exists():
        (run_dir / "checkpoint").replace(old)
    staging.replace(run_dir / "checkpoint")
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    checkpoint = run_dir / "checkpoint" / "state.pt"
    if not checkpoint.is_file():
        old = run_dir / "checkpoint.old" / "state.pt"  # killed between the two renames
        checkpoint = old if old.is_file() else checkpoint
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint to resume from")
    state = torch.load(checkpoint, weights_only=False)
    best_path = run_dir / "best-weights.pt"
    best = (
        torch.load(best_path, weights_only=False)
        if best_path.is_file()
        else {"accuracy": -1.0, "step": 0, "state": None}
    )
    return state, best


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
    mine = processes.share([e.input for e in examples])
    predictions = predict(
        model,
        tokenizer,
        task,
        list(mine),
        config.mode,
        max_input_tokens=config.max_input_tokens,
        max_rationale_tokens=config.max_rationale_tokens,
        batch_size=config.eval_batch_size,
        bf16=bf16,
        desc=desc,
    )
    return score(task, examples, processes.gather(predictions))


def train(
    config: TrainConfig, quiet: bool = False, resume: str | Path | None = None
) -> dict[str, Any]:
    """Train one student per the config into a new run folder; returns its metrics.

    With ``resume`` (a run folder), the run continues from its last checkpoint with its
    saved config and the same data order, and ends as an uninterrupted run would.

    Under ``accelerate launch`` / ``torchrun`` with N processes, each takes its share of
    every global batch of ``batch_size`` examples and the gradients are summed before the
    step, so the run is the same as in one process; rank 0 writes the run folder."""
    import torch

    from .run_folder import load_run
    from .students import is_seq2seq, load_student

    started = time.time()
    processes = Processes()
    quiet = quiet or not processes.main
    if resume is not None:
        config = load_run(resume).config
    if config.threads:
        torch.set_num_threads(config.threads)
    task = load_task(config.task)
    splits = load_splits(task, config.data_dir)
    require_splits(task, splits, ("train", "valid", "test"))
    with processes.main_first():  # rank 0 annotates (if needed) before the others read
        annotations = prepare_annotations(config, task)
    extra = extra_examples(config, task)
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
    if config.mode == "rationale-input":  # evaluation inputs carry the teacher's rationale too
        with processes.main_first():
            valid, test = (
                evaluation_inputs(config, task, examples, split)
                for examples, split in ((valid, "valid"), (test, "test"))
            )

    # The same seed in every process: the copies of the model (and LoRA's initial
    # adapters) are identical, and every process draws the same data order.
    seed_everything(config.seed)
    with processes.main_first():  # rank 0 converts a built-in student once
        model, tokenizer = load_student(config.student)
    lora = apply_lora(model, config) if config.lora_rank else None
    seq2seq = is_seq2seq(model.config)
    model.train()
    pad = tokenizer.pad_token_id
    encoded = [encode_example(tokenizer, config, item, seq2seq) for item in items]
    sizes = [sum(row_length(r, seq2seq) for r in rows) for rows in encoded]

    steps_per_epoch = math.ceil(len(items) / config.batch_size)
    total_steps = config.max_steps or max(1, round(config.epochs * steps_per_epoch))
    eval_every = max(1, steps_per_epoch // max(1, config.evals_per_epoch))
    checkpoint_every = config.checkpoint_every or eval_every
    bf16 = use_bf16(config.bf16)  # null: bf16 only where the hardware has it
    weights = MasterWeights(model, bf16)
    optimizer = torch.optim.AdamW(
        weights.master, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    warmup = round(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(
            (s + 1) / max(1, warmup), max(0.0, (total_steps - s) / max(1, total_steps - warmup))
        ),
    )

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
        saved, best = load_checkpoint(run_dir)
        with torch.no_grad():
            for master, value in zip(weights.master, saved["master"].values(), strict=True):
                master.copy_(value)
        weights.master_to_model()
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        per_process = saved.get("torch_rng_per_process") or []
        torch.set_rng_state(
            per_process[processes.rank]
            if len(per_process) == processes.world
            else saved["torch_rng"]
        )
        rng.setstate(saved["python_rng"])
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
    best_unsaved = False
    stopped_early = False
    bar = tqdm(
        range(state["step"], total_steps),
        desc=f"train {task.name}/{config.mode}",
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
        tick = time.time()
        # Each loss term is normalised by its token count over the whole global batch.
        label_tokens, rationale_tokens, real_tokens = processes.sum(
            [*target_tokens(groups), sum(g["tokens"] for g in groups)]
        )
        totals = step_loss(
            model, groups, config.rationale_weight, token_counts=(label_tokens, rationale_tokens)
        )
        weights.gradients_to_master()
        # Sum the gradients (and the logged loss parts) over the processes: the gradient of the global loss.
        totals = dict(
            zip(totals, processes.sum_gradients(weights.master, list(totals.values())), strict=True)
        )
        torch.nn.utils.clip_grad_norm_(weights.master, config.max_grad_norm)
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
            if (
                config.early_stopping_patience
                and state["evals_without_improvement"] >= config.early_stopping_patience
            ):
                stopped_early = True  # every process saw the same accuracies, so all stop here
                if not quiet:
                    tqdm.write(
                        f"step {step + 1}: no better validation accuracy in {config.early_stopping_patience} evaluations; stopping"
                    )
                break
        if config.checkpoint and ((step + 1) % checkpoint_every == 0) and step + 1 < total_steps:
            rng_states = processes.gather([torch.get_rng_state()])  # each process's (dropout) RNG
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
                        "torch_rng": rng_states[0],
                        "torch_rng_per_process": rng_states,
                    },
                    best if best_unsaved else None,
                )
            best_unsaved = False
    bar.close()

    log, history, real_tokens, train_seconds = (
        state["log"],
        state["history"],
        state["real_tokens"],
        state["train_seconds"],
    )
    weights.restore(model, best["state"])
    if lora is not None:
        model = lora.merge_and_unload()  # a plain transformers model: the run folder needs no peft
    if processes.main:
        model.save_pretrained(run_dir / "model")
        tokenizer.save_pretrained(run_dir / "model")
    # The test set is evaluated once, with the best-on-validation weights.
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
        "valid_history": history,
        "test_accuracy": test_accuracy,
        "test_examples": len(test),
        "train_seconds": round(train_seconds, 1),
        "tokens_per_second": round(real_tokens / max(train_seconds, 1e-9), 1),
        "bf16": bf16,
        "wall_seconds": round(time.time() - started, 1),
        "run_dir": str(run_dir),
        **({"stopped_early": True} if stopped_early else {}),
        **({"processes": processes.world} if processes.world > 1 else {}),
        **({"requires_teacher_rationales": True} if config.mode == "rationale-input" else {}),
    }
    if processes.main:
        write_jsonl(run_dir / "predictions" / "test.jsonl", test_rows)
        write_json(run_dir / "metrics.json", metrics)
        write_jsonl(run_dir / "train_log.jsonl", log)
        # The run is complete: its model is saved, so the resume state is no longer needed.
        import shutil

        for leftover in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
            shutil.rmtree(run_dir / leftover, ignore_errors=True)
        # .tmp: left by a kill mid-save
        for leftover_file in ("best-weights.pt", "best-weights.pt.tmp"):
            (run_dir / leftover_file).unlink(missing_ok=True)
    processes.barrier()  # the others return once the run folder is complete
    return metrics
