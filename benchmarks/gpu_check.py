"""The GPU check (issue 24): one prepared script, at most 10 minutes on one GPU, whose
figures go to a JSON file that ``benchmarks/RESULTS.md`` can quote.

    benchmarks/gpu_check.sh            # on the GPU machine; see that file for what it needs

Checks, in order (each one's result is written as soon as it is known):
 1. the GPU-marked tests (``pytest -m gpu``);
 2. loss agreement: the first steps of a SmolLM2 SVAMP ``dss`` run on the GPU (bf16
    autocast over fp32 weights) against the same steps on the CPU in fp32, within
    ``--loss-tolerance`` (relative);
 3. training throughput: tokens/s of a batch-64 run and the fraction of the GPU's bf16
    matmul peak it reaches (model FLOPs = 6 · parameters · tokens; the peak is measured
    here, an 8192³ bf16 matrix product);
 4. label-only inference throughput (``Student.predict``, SVAMP test, examples/s);
 5. ``serve`` answering on the GPU (``/v1/predict`` through the real app);
 6. a run at the paper's budget: batch 64, as many of its 10,000 steps as fit the minutes
    left, validation every ``--eval-every`` steps, test accuracy at the best one.

``--smoke`` runs every check on the CPU with the tiny sizes a test uses (``tests/
test_gpu_check.py``): it checks the script, not a GPU. Nothing here claims a GPU figure
that no GPU produced: on a machine without CUDA the script says so and stops (unless
``--smoke``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Results:
    """Figures in a JSON file, rewritten after each check (a killed run keeps the rest)."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")
        print(f"[gpu_check] {key}: {json.dumps(value)}", flush=True)


def environment(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["bf16"] = bool(torch.cuda.is_bf16_supported())
    return info


def matmul_peak(device: str, size: int) -> float:
    """bf16 matrix-product TFLOP/s measured here (mean of 10 after 3 warm-ups)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 2 * size**3 * 10 / (time.perf_counter() - start) / 1e12


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_run(args: argparse.Namespace, device: str, name: str, **values: Any) -> dict[str, Any]:
    """One ``train()`` run on SVAMP (or the smoke task) with the given settings."""
    from stepdistill.config import make_config
    from stepdistill.train import train

    base = {
        "task": args.task,
        "mode": "dss",
        "student": args.student,
        "device": device,
        "output_dir": str(args.work / "runs"),
        "run_name": name,
        "checkpoint": False,
        **({"annotations": args.annotations} if args.annotations else {}),
        **({"data_dir": args.data_dir} if args.data_dir else {}),
    }
    return train(make_config({**base, **values}), quiet=True)


def losses(metrics: dict[str, Any]) -> list[float]:
    log = Path(metrics["run_dir"]) / "train_log.jsonl"
    return [json.loads(line)["loss"] for line in log.read_text().splitlines()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "benchmarks"))
    )
    parser.add_argument("--student", default="smollm2-135m")
    parser.add_argument("--task", default="svamp")
    parser.add_argument("--annotations", help="rationale dataset folder (default: made by replay)")
    parser.add_argument("--data-dir", help="benchmark data folder (default $STEPDISTILL_DATA)")
    parser.add_argument("--minutes", type=float, default=9.0, help="the whole script's budget")
    parser.add_argument("--loss-steps", type=int, default=5)
    parser.add_argument("--loss-tolerance", type=float, default=0.03)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (tests)")
    args = parser.parse_args()
    started = time.monotonic()
    args.work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/stepdistill-gpu-check"))
    results = Results(args.out / "gpu_check.json")

    import torch

    from stepdistill.device import resolve_device

    if not torch.cuda.is_available() and not args.smoke:
        results.put("error", "no CUDA device: nothing measured (this script checks a GPU)")
        return 1
    device = "cpu" if args.smoke else resolve_device("cuda")
    results.put("environment", environment(device))

    # 1. the GPU-marked tests
    if not args.smoke:
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        results.put("gpu_tests", {"exit": tests.returncode, "tail": tests.stdout[-600:]})

    # 2. loss agreement with the CPU's fp32 losses
    steps = args.loss_steps
    common = {"max_steps": steps, "batch_size": 16, "eval_limit": 4}
    gpu = losses(train_run(args, device, "loss-gpu", **common))
    cpu = losses(train_run(args, "cpu", "loss-cpu", bf16=False, **common))
    worst = max(abs(g - c) / max(abs(c), 1e-9) for g, c in zip(gpu, cpu, strict=True))
    results.put(
        "loss_agreement",
        {
            "gpu": gpu,
            "cpu_fp32": cpu,
            "max_relative_difference": worst,
            "tolerance": args.loss_tolerance,
            "within": worst <= args.loss_tolerance,
        },
    )

    # 3 + 6. the paper's budget: batch 64, as many of 10,000 steps as fit
    peak = matmul_peak(device, 512 if args.smoke else 8192)
    left = args.minutes * 60 - (time.monotonic() - started) - (30 if args.smoke else 150)
    probe = train_run(
        args, device, "probe", max_steps=3 if args.smoke else 20, batch_size=64, eval_limit=4
    )
    seconds_per_step = probe["train_seconds"] / probe["steps"]
    budget_steps = max(1, min(10_000, int(left * 0.8 / max(seconds_per_step, 1e-3))))
    paper = train_run(
        args,
        device,
        "paper-budget",
        max_steps=3 if args.smoke else budget_steps,
        batch_size=64,
        evals_per_epoch=1,
        **({"eval_limit": 4} if args.smoke else {}),
    )
    from stepdistill.models import load_student

    model, _ = load_student(str(Path(paper["run_dir"]) / "model"))
    parameters = sum(p.numel() for p in model.parameters())
    achieved = 6 * parameters * paper["tokens_per_second"] / 1e12
    results.put(
        "training",
        {
            "tokens_per_second": paper["tokens_per_second"],
            "parameters": parameters,
            "model_tflops": achieved,
            "bf16_matmul_peak_tflops": peak,
            "fraction_of_peak": achieved / peak,
            "precision": paper["precision"],
        },
    )
    results.put(
        "paper_budget",
        {
            "steps": paper["steps"],
            "of": 10_000,
            "batch_size": 64,
            "best_step": paper["best_step"],
            "valid_accuracy": paper["valid_accuracy"],
            "test_accuracy": paper["test_accuracy"],
            "test_examples": paper["test_examples"],
            "train_seconds": paper["train_seconds"],
        },
    )

    # 4. label-only inference throughput
    from stepdistill.data import load_splits
    from stepdistill.student import Student
    from stepdistill.tasks import load_task

    student = Student.load(paper["run_dir"], device=device, batch_size=64)
    texts = [e.input for e in load_splits(load_task(args.task), args.data_dir)["test"]]
    texts = texts[:8] if args.smoke else texts
    student.predict(texts[:4])  # warm-up
    sync(device)
    tick = time.perf_counter()
    student.predict(texts)
    sync(device)
    results.put(
        "inference",
        {
            "examples": len(texts),
            "examples_per_second": len(texts) / (time.perf_counter() - tick),
            "batch_size": 64,
        },
    )

    # 5. serve on the device
    from fastapi.testclient import TestClient

    from stepdistill.serve import ServeSettings, create_app

    with TestClient(create_app(student, ServeSettings())) as client:
        response = client.post("/v1/predict", json={"inputs": texts[:4]})
    results.put(
        "serve",
        {
            "status": response.status_code,
            "device": str(student.model.device),
            "labels": [p["label"] for p in response.json().get("predictions", [])],
        },
    )
    results.put("minutes", round((time.monotonic() - started) / 60, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
