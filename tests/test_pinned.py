"""Pinned behaviour: the exact per-step losses of every mode, and the test predictions, of
tiny runs through the public ``train()`` (data selection, encoding, packing, the loss,
the optimizer, validation, test). A refactor must leave every figure unchanged.

The pinned figures live in ``tests/pinned.json``. ``python tests/test_pinned.py --write``
adds the figures of cases not pinned yet and never rewrites a pinned one; the first eight
cases were pinned from the code as it was before the architecture refactor (issue 26).
Rewrite a pinned figure (by deleting it and writing again) only for a change that is
meant to alter training, and say so in the commit.

fp32 on one thread: the figures do not depend on the machine's bf16 support or on how
many cores split a reduction. The CPU's vector kernels still do: an AVX2-only CPU sums in
another order than the AVX-512 one the figures were pinned on, and its losses differ by
one unit of their fifth decimal (seen on 6 of 13 cases). Losses are therefore compared to
within ``LOSS_TOLERANCE`` (two such units; a change to training moves them far more);
validation, test accuracy and predictions exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PINNED = Path(__file__).with_name("pinned.json")
LOSS_TOLERANCE = 2e-5

TASK_YAML = """\
name: tiny-math
files: {train: train.jsonl, test: test.jsonl}
validation: {from: train, fraction: 0.25, seed: 0}
id_field: id
label_field: label
normalize: equation
metric: equation
max_label_tokens: 8
"""

# name -> (mode, extra config, student kind)
CASES: dict[str, tuple[str, dict[str, object], str]] = {
    "standard": ("standard", {}, "causal"),
    "distill": ("distill", {}, "causal"),
    "dss": ("dss", {}, "causal"),
    "dss-teacher-labels": ("dss", {"label_source": "teacher", "rationale_weight": 0.5}, "causal"),
    "single": ("single", {}, "causal"),
    "rationale-input": ("rationale-input", {}, "causal"),
    "dss-unpacked": ("dss", {"pack_length": 0, "micro_batch_tokens": 200}, "causal"),
    "dss-seq2seq": ("dss", {}, "seq2seq"),
    # Added after the refactor (pinned from the refactored code, for later changes):
    "label-first": ("label-first", {}, "causal"),
    "label-first-seq2seq": ("label-first", {}, "seq2seq"),
    "dss-rationale-filter": ("dss", {"rationale_filter": True}, "causal"),
    "label-first-split": ("label-first-split", {"rationale_weight": 0.5}, "causal"),
    "label-first-split-seq2seq": ("label-first-split", {}, "seq2seq"),
}


def write_task(folder: Path, test_size: int = 8) -> Path:
    """A tiny arithmetic task with its own files and a rationale dataset beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(16 + test_size):
        a, b = 3 + i, 2 + i % 5
        rows.append(
            {
                "id": f"q{i}",
                "input": f"Luke scored {a} points and {b} more. How many points?",
                "label": f"( {a} + {b} )",
            }
        )
    train, test = rows[:16], rows[16:]
    for name, split in (("train", train), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split))
    (folder / "task.yaml").write_text(TASK_YAML)
    notes = folder / "annotations"
    notes.mkdir(exist_ok=True)
    annotation_rows = []
    for i, row in enumerate(rows):
        wrong = i % 4 == 1  # the teacher errs on a quarter: distill differs from standard
        a, b = 3 + i, 2 + i % 5
        label = f"( {a} - {b} )" if wrong else row["label"]
        annotation_rows.append(
            {
                "id": row["id"],
                "input": row["input"],
                "gold_label": row["label"],
                "teacher_label": label,
                "rationale": f"He had {a} points. Then {b} more. {a} + {b} = {a + b}."
                * (1 + i % 2),
                "parse_status": "ok",
                "teacher_correct": not wrong,
            }
        )
    for split in ("train", "valid", "test"):
        (notes / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in annotation_rows)
        )
    return folder / "task.yaml"


def run_case(name: str, students: dict[str, Path], folder: Path) -> dict[str, object]:
    from stepdistill.config import make_config
    from stepdistill.io import read_jsonl
    from stepdistill.train import train

    mode, extra, kind = CASES[name]
    task = write_task(folder / "task")
    config = make_config(
        {
            "task": str(task),
            "mode": mode,
            "student": str(students[kind]),
            "annotations": str(folder / "task" / "annotations"),
            "batch_size": 4,
            "max_steps": 6,
            "learning_rate": 3e-3,
            "max_rationale_tokens": 24,
            "eval_batch_size": 4,
            "bf16": False,
            "threads": 1,
            "seed": 3,
            "output_dir": str(folder / "runs"),
            "run_name": name,
            **extra,
        }
    )
    metrics = train(config, quiet=True)
    run = Path(metrics["run_dir"])
    return {
        "losses": [
            [row["loss"], row["label_loss"], row["rationale_loss"]]
            for row in read_jsonl(run / "train_log.jsonl")
        ],
        "valid_history": [h["valid_accuracy"] for h in metrics["valid_history"]],
        "test_accuracy": metrics["test_accuracy"],
        "predictions": [[r["id"], r["raw"]] for r in read_jsonl(run / "predictions/test.jsonl")],
    }


def students(folder: Path) -> dict[str, Path]:
    from conftest import save_tiny
    from tiny_run import scramble

    made = {kind: save_tiny(kind, folder / kind) for kind in ("causal", "seq2seq")}
    scramble(made["causal"])  # answers that differ from input to input
    return made


@pytest.fixture(scope="module")
def pinned_students(tmp_path_factory) -> dict[str, Path]:
    return students(tmp_path_factory.mktemp("pinned-students"))


@pytest.mark.parametrize("name", list(CASES))
def test_every_mode_trains_exactly_as_pinned(name, pinned_students, tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:
        got = run_case(name, pinned_students, tmp_path)
    finally:
        torch.set_num_threads(threads)
    expected = json.loads(PINNED.read_text())[name]
    assert len(got["losses"]) == len(expected["losses"])
    for step, (losses, pinned) in enumerate(zip(got["losses"], expected["losses"], strict=True)):
        assert losses == pytest.approx(pinned, rel=0, abs=LOSS_TOLERANCE), f"step {step}"
    assert got["valid_history"] == expected["valid_history"]
    assert got["test_accuracy"] == expected["test_accuracy"]
    assert got["predictions"] == expected["predictions"]


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).parent))
    figures = json.loads(PINNED.read_text()) if PINNED.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        made = students(Path(tmp) / "students")
        for name in CASES:
            if name not in figures:
                figures[name] = run_case(name, made, Path(tmp) / name)
                print(f"pinned {name}")
    PINNED.write_text(json.dumps(figures, indent=1) + "\n")
