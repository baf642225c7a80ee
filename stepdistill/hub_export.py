"""Export a trained run as a Hugging Face model folder (``export --format hf``): the
weights as safetensors, the tokenizer, config.json, generation_config.json (greedy, the
label's token budget) and a README.md model card whose YAML front matter and body are
read from the run's saved config.yaml, task.yaml and metrics.json (nothing is guessed:
a run without a measured test accuracy gets a card that says so).

    stepdistill export runs/svamp-dss --format hf --output svamp-dss-hf
    stepdistill export runs/svamp-dss --format hf --output svamp-dss-hf --push-to-hub me/svamp-dss

``--push-to-hub`` uploads the folder with huggingface_hub; the token comes from the
environment (HF_TOKEN, or huggingface_hub's own login) and is never written here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from .encode import is_seq2seq
from .io import atomic_write_text
from .models import BUILTIN_STUDENTS, load_student
from .modes import LABEL_PREFIX, RATIONALE_PREFIX, variant
from .run_folder import Run, load_run

CONFIG_COPY = "stepdistill_config.yaml"
TASK_COPY = "stepdistill_task.yaml"
PAPER = "https://arxiv.org/abs/2305.02301"


def check_trained(path: Path) -> None:
    """A FileNotFoundError (one line, naming the folder) unless ``path`` is a run folder
    with a saved model."""
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(f"{path}: not a run folder (no config.yaml)")
    model = path / "model"
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    if not (model / "config.json").is_file() or not any((model / w).is_file() for w in weights):
        raise FileNotFoundError(
            f"{path}: no trained model (no model/ folder with weights); export a run "
            "whose training finished (`stepdistill train --resume` continues a killed one)"
        )


def read_metrics(path: Path) -> dict[str, Any]:
    file = path / "metrics.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}


def test_accuracy(metrics: dict[str, Any]) -> float | None:
    value = metrics.get("test_accuracy")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def base_model(student: str) -> str:
    """The hub id of a built-in student, else the student as the config names it."""
    builtin = BUILTIN_STUDENTS.get(student)
    return builtin.hub_id if builtin else student


def default_license(student: str) -> str:
    builtin = BUILTIN_STUDENTS.get(student)
    return builtin.license if builtin else "other"


def front_matter(
    run: Run,
    metrics: dict[str, Any],
    seq2seq: bool,
    name: str,
    datasets: list[str],
    license: str,
) -> dict[str, Any]:
    config, task = run.config, run.task
    pipeline = "text2text-generation" if seq2seq else "text-generation"
    meta: dict[str, Any] = {
        "base_model": base_model(config.student),
        "datasets": datasets,
        "library_name": "transformers",
        "pipeline_tag": pipeline,
        "license": license,
        "tags": ["distilling-step-by-step", "stepdistill", task.name, config.mode],
    }
    accuracy = test_accuracy(metrics)
    if accuracy is not None:
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": pipeline, "name": task.name},
                        "dataset": {"name": task.name, "type": datasets[0], "split": "test"},
                        "metrics": [{"type": "accuracy", "name": "accuracy", "value": accuracy}],
                    }
                ],
            }
        ]
    return meta


def _value(value: Any, missing: str = "not recorded") -> str:
    return missing if value is None else str(value)


def card_body(
    run: Run, metrics: dict[str, Any], seq2seq: bool, name: str, label_budget: int
) -> str:
    config, task = run.config, run.task
    mode = config.mode_spec
    accuracy = test_accuracy(metrics)
    recipe = config.recipe or variant(config.mode, config.label_source, config.rationale_filter)
    teacher = config.teacher + (
        f" (rationale dataset {Path(config.annotations).name})" if config.annotations else ""
    )
    length = (
        f"{config.max_steps} optimizer steps (max_steps; the epochs setting is ignored)"
        if config.max_steps is not None
        else f"{config.epochs:g}"
    )
    loader = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    lines = [
        f"# {name}",
        "",
        f"A `{config.student}` student trained with stepdistill, an implementation of "
        f"Distilling step-by-step ([Hsieh et al., 2023]({PAPER})), on the task `{task.name}`"
        + (f": {task.description}" if task.description else "."),
        "",
    ]
    builtin = BUILTIN_STUDENTS.get(config.student)
    if builtin and builtin.notice:
        lines += [builtin.notice, ""]
    lines += [
        "## Results",
        "",
    ]
    if accuracy is not None:
        lines.append(
            f"Test accuracy **{accuracy:.2%}** ({accuracy!r} in the run's metrics.json) on "
            f"{_value(metrics.get('test_examples'))} test examples, scored by the task's "
            f"`{task.metric}` metric; validation accuracy "
            f"{_value(metrics.get('valid_accuracy'))} at step {_value(metrics.get('best_step'))}."
        )
    else:
        lines.append(
            "This run has no measured test accuracy (its metrics.json has no `test_accuracy`), "
            "so this card reports no results."
        )
    lines += [
        "",
        "## How it was trained",
        "",
        "| setting | value |",
        "| --- | --- |",
        f"| recipe | `{recipe}` |",
        f"| mode | `{config.mode}`: {mode.summary} |",
        f"| λ (rationale_weight) | {config.rationale_weight:g}"
        + ("" if mode.rationale_task or mode.split_loss else " (unused by this mode)")
        + " |",
        f"| teacher | `{teacher}` |",
        f"| label source / rationale source | {config.label_source} / {config.rationale_source} |",
        f"| training examples | {_value(metrics.get('train_examples'))} |",
        f"| seed | {config.seed} |",
        f"| epochs | {length} |",
        f"| steps taken | {_value(metrics.get('steps'))} |",
        f"| batch size / learning rate | {config.batch_size} / {config.learning_rate:g} |",
        f"| LoRA rank | {config.lora_rank or 'none (full fine-tuning)'} |",
        "",
        f"The run's full configuration is `{CONFIG_COPY}` and its task definition "
        f"`{TASK_COPY}` in this folder.",
        "",
        "## How to prompt it",
        "",
        f"The student answers the prompt `{LABEL_PREFIX}<input>`"
        + ("" if seq2seq else " followed by a newline")
        + f", where `<input>` is the task's input template `{task.input_template!r}` filled "
        "with a record's fields; it writes the label and its end token. "
        "Decode greedily (generation_config.json does, with the label's budget of "
        f"{label_budget} new tokens). The prefix, the input and the newline are tokenized "
        "one by one and joined, as in training; tokenizing the joined string can give "
        "other tokens at the seams, so send token ids where a server takes them.",
        "",
        "```python",
        "import torch",
        f"from transformers import AutoTokenizer, {loader}",
        "",
        'path = "PATH_OR_REPO"',
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        f"model = {loader}.from_pretrained(path)",
        "",
        "",
        "def label(text):",
        f"    head = tokenizer.encode({LABEL_PREFIX!r}, add_special_tokens=False)",
        "    body = tokenizer.encode(text, add_special_tokens=False)",
        "    tail = " + ("[]" if seq2seq else 'tokenizer.encode("\\n", add_special_tokens=False)'),
        f"    keep = max(1, {config.max_input_tokens} - len(head) - len(tail) - 2)",
        "    ids = head + body[-keep:] + tail",
    ]
    if seq2seq:
        lines.append("    ids += [tokenizer.eos_token_id]")
    else:
        lines += [
            "    bos = tokenizer.bos_token_id",
            '    if bos is not None and (getattr(tokenizer, "add_bos_token", False) '
            'or tokenizer.encode("")[:1] == [bos]):',
            "        ids = [bos] + ids",
        ]
    lines += [
        "    output = model.generate(torch.tensor([ids]))[0]",
        "    new = output if model.config.is_encoder_decoder else output[len(ids) :]",
        "    return tokenizer.decode(new, skip_special_tokens=True).strip()",
        "```",
        "",
    ]
    layout = mode.layout
    if layout.name == "rationale-then-label":
        lines.append(
            f"This mode writes the rationale first: the label is what follows the last "
            f"`{layout.marker.strip()}` (budget: {label_budget} tokens)."
        )
    elif layout.name == "label-then-rationale":
        lines.append(
            f"This mode writes the label, then `{layout.marker.strip()}` and a rationale: the "
            "label ends at the first newline (stop there to pay only for the label)."
        )
    if mode.rationale_task:
        lines.append(
            f"Prompted with `{RATIONALE_PREFIX}<input>` instead, it writes a rationale "
            f"(up to {config.max_rationale_tokens} tokens in training)."
        )
    if mode.rationale_in_input:
        lines.append(
            "This mode reads a teacher's rationale with the input (`<input>\\nRationale: "
            "<rationale>`), at test time too."
        )
    lines += [
        "",
        f"Labels are compared after the task's `{task.normalize}` normalisation. A long "
        f"input keeps its last tokens, so that the prompt fits {config.max_input_tokens} "
        "tokens, as in training.",
        "",
        "## Reproduce",
        "",
        "```bash",
        f"stepdistill train --config {CONFIG_COPY}",
        "```",
        "",
        "It needs the task (" + f"`{config.task}`" + ") and the rationale dataset the config "
        "names (`stepdistill annotate` makes one); the same seed gives the same examples.",
        "",
    ]
    return "\n".join(lines)


def model_card(
    run: Run,
    metrics: dict[str, Any],
    seq2seq: bool,
    name: str,
    datasets: list[str],
    license: str,
    label_budget: int,
) -> str:
    meta = front_matter(run, metrics, seq2seq, name, datasets, license)
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n{card_body(run, metrics, seq2seq, name, label_budget)}"


def export_hf(
    run_dir: str | Path,
    output: str | Path,
    *,
    datasets: list[str] | None = None,
    license: str | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
) -> dict[str, Any]:
    """Write ``run_dir``'s trained student and its model card to ``output`` (a new or
    empty folder); ``push_to_hub`` (a repo id) also uploads it. Returns a summary."""
    path = Path(run_dir)
    check_trained(path)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: exists and is not an empty folder; give a new --output")
    run = load_run(path)
    metrics = read_metrics(path)
    model, tokenizer = load_student(str(path / "model"))
    seq2seq = is_seq2seq(model.config)
    budget = run.config.mode_spec.label_budget(
        run.task.max_label_tokens, run.config.max_rationale_tokens
    )
    generation = model.generation_config
    generation.do_sample = False
    generation.num_beams = 1
    generation.max_new_tokens = budget
    generation.eos_token_id = tokenizer.eos_token_id
    generation.pad_token_id = tokenizer.pad_token_id
    for sampling in ("temperature", "top_p", "top_k"):
        setattr(generation, sampling, None)  # greedy: sampling settings would only warn
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.copyfile(path / "config.yaml", tmp / CONFIG_COPY)
    if (path / "task.yaml").is_file():
        shutil.copyfile(path / "task.yaml", tmp / TASK_COPY)
    name = push_to_hub.split("/")[-1] if push_to_hub else out.name
    card = model_card(
        run,
        metrics,
        seq2seq,
        name,
        datasets or [run.task.name],
        license or default_license(run.config.student),
        budget,
    )
    atomic_write_text(tmp / "README.md", card)
    if out.exists():
        out.rmdir()
    tmp.replace(out)
    summary: dict[str, Any] = {
        "output": str(out),
        "files": sorted(p.name for p in out.iterdir()),
        "test_accuracy": test_accuracy(metrics),
    }
    if push_to_hub:
        summary["url"] = push(out, push_to_hub, private)
    return summary


def push(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload ``folder`` to the hub model repo ``repo_id`` (made if missing)."""
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get("HF_TOKEN") or None)
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message="stepdistill export",
    )
    return str(url)
