"""The GPU check script, run with ``--smoke`` on the CPU and a tiny student: every check
runs end to end and writes its figures (the script itself works; no GPU figure is made)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_pinned import write_task

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_runs_every_check_and_writes_its_figures(tiny_causal, tmp_path):
    task = write_task(tmp_path / "task")
    out = tmp_path / "out"
    environment = {**os.environ, "GPU_CHECK_WORK": str(tmp_path / "work"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke"]
    command += ["--out", str(out), "--student", str(tiny_causal), "--task", str(task)]
    command += ["--annotations", str(tmp_path / "task" / "annotations"), "--loss-steps", "2"]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads((out / "gpu_check.json").read_text())
    assert figures["environment"]["device"] == "cpu"
    assert len(figures["loss_agreement"]["gpu"]) == 2
    # on the CPU both runs are fp32 unless bf16 is native: the smoke check only needs numbers
    assert figures["training"]["tokens_per_second"] > 0
    assert figures["paper_budget"]["batch_size"] == 64 and figures["paper_budget"]["steps"] == 3
    assert figures["inference"]["examples"] == 8
    assert figures["serve"]["status"] == 200 and len(figures["serve"]["labels"]) == 4
