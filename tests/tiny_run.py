"""Tiny runs: the `stepdistill train` arguments for a tiny student, a run folder around
a tiny model for the deployment tests (student API, predict, serve), and a sweep file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from stepdistill.config import TrainConfig
from stepdistill.run_folder import save_run_files
from stepdistill.tasks import task_from_dict

TASK = {
    "name": "tiny-nli",
    "files": {"test": "test.jsonl"},
    "input_template": "premise: {premise}\nhypothesis: {hypothesis}",
    "label_field": "label",
    "id_field": "id",
    "max_label_tokens": 6,
}


def train_command(
    student: Path, annotations: Path, output_dir: Path, mode: str = "dss", **options: object
) -> list[str]:
    """`stepdistill train` arguments: SVAMP unless ``task`` is given, each further
    option ``name=value`` as ``--name value`` (``data_dir=...`` is ``--data-dir ...``)."""
    options = {"task": "svamp", **options}
    arguments = ["train", "--mode", mode, "--student", str(student)]
    arguments += ["--annotations", str(annotations), "--output-dir", str(output_dir)]
    for name, value in options.items():
        arguments += ["--" + name.replace("_", "-"), str(value)]
    return arguments


def scramble(model_dir: Path, seed: int = 1) -> None:
    """Large random weights: the tiny model's default init writes EOS at once, and
    tests need answers that differ from input to input."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.save_pretrained(model_dir)


def make_run(model_dir: Path, folder: Path, mode: str = "dss") -> Path:
    """``folder`` as a finished run: config.yaml, task.yaml and model/ (a scrambled copy
    of the causal model in ``model_dir``)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, folder / "model", dirs_exist_ok=True)
    scramble(folder / "model")
    # fp32 and short rationales: fast, and batched answers equal unbatched ones exactly.
    config = TrainConfig(
        task="tiny-nli",
        mode=mode,
        student=str(model_dir),
        bf16=False,
        max_rationale_tokens=8,
        eval_batch_size=8,
    )
    save_run_files(folder, config, task_from_dict(TASK))
    return folder


def write_sweep(tmp_path: Path, grid: dict, base: dict | None = None) -> Path:
    """A sweep file in ``tmp_path`` whose runs go to ``tmp_path / "out"``."""
    path = tmp_path / "sweep.yaml"
    spec = {"name": "t", "output_dir": str(tmp_path / "out"), "base": base or {}, "grid": grid}
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path
