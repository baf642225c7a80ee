"""Real ``kill -9`` of the real CLI at chosen points, for the reliability tests.

``start_cli`` runs ``python -m stepdistill.cli ...`` in a subprocess. With ``pause``,
the child first wraps one function so that its N-th call touches a marker file and
sleeps: the test waits for the marker and sends SIGKILL, so the process dies at a
known point (mid-step, mid-write, between two renames) rather than wherever the
scheduler happened to be. Nothing in the package is changed for this; the wrapper
lives only in the child.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in the child before the CLI. PAUSE = "<point>:<n>"; points:
#   step      - the n-th training step, before its loss is computed
#   torn-save - the n-th checkpoint state.pt: half its bytes are written, then pause
#   rename    - the n-th "checkpoint.tmp -> checkpoint" rename, before it happens
#   predict   - the n-th model call of `stepdistill predict`
#   put       - the n-th answer stored by the response store, before it is stored
#   append    - the n-th sweep results row: half the line is written, then pause
CHILD = r"""
import io, os, sys, time
point, _, count = os.environ.get("RELIABILITY_PAUSE", ":0").partition(":")
count = int(count or 0)
calls = {"n": 0}

def pause():
    open(os.environ["RELIABILITY_MARKER"], "w").close()
    time.sleep(600)  # the test sends SIGKILL now

def hit():
    calls["n"] += 1
    return calls["n"] == count

if point == "step":
    import importlib
    train = importlib.import_module("stepdistill.train")
    real_step = train.step_loss
    def step_loss(*args, **kwargs):
        if hit():
            pause()
        return real_step(*args, **kwargs)
    train.step_loss = step_loss
elif point == "torn-save":
    import torch
    real_save = torch.save
    def save(obj, target, *args, **kwargs):
        if str(target).endswith("state.pt") and hit():
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            with open(target, "wb") as handle:
                handle.write(data[: len(data) // 2])
            pause()
        return real_save(obj, target, *args, **kwargs)
    torch.save = save
elif point == "rename":
    import pathlib
    real_replace = pathlib.Path.replace
    def replace(self, target):
        if self.name == "checkpoint.tmp" and hit():
            pause()
        return real_replace(self, target)
    pathlib.Path.replace = replace
elif point == "predict":
    from stepdistill.student import Student
    real_predict = Student.predict
    def predict(self, *args, **kwargs):
        if hit():
            pause()
        return real_predict(self, *args, **kwargs)
    Student.predict = predict
elif point == "put":
    from stepdistill.teachers.store import Store
    real_put = Store.put
    def put(self, *args, **kwargs):
        if hit():
            pause()
        return real_put(self, *args, **kwargs)
    Store.put = put
elif point == "append":
    import json
    import stepdistill.sweep as sweep
    real_append = sweep.append_result
    def append_result(path, row):
        if hit():
            line = (json.dumps(row) + "\n").encode()
            with open(path, "ab") as handle:
                handle.write(line[: len(line) // 2])
            pause()
        return real_append(path, row)
    sweep.append_result = append_result

from stepdistill.cli import main
sys.exit(main(sys.argv[1:]))
"""


def child_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def start_cli(
    args: list[str], workdir: Path, pause: str | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, Path]:
    """Start the CLI; returns the process and the marker file a paused child touches."""
    marker = workdir / f"paused-{time.monotonic_ns()}"
    environment = {**(env or child_env()), "RELIABILITY_MARKER": str(marker)}
    if pause:
        environment["RELIABILITY_PAUSE"] = pause
    with (workdir / f"{marker.name}.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            cwd=workdir,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    process.log_path = workdir / f"{marker.name}.log"  # type: ignore[attr-defined]
    return process, marker


def output_of(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def wait_until(
    condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 180.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(
                f"the process ended (code {process.returncode}) before the kill point:\n{output_of(process)[-3000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(
                f"timed out waiting for the kill point:\n{output_of(process)[-3000:]}"
            )
        time.sleep(0.02)


def kill_at_pause(process: subprocess.Popen, marker: Path) -> None:
    """Wait for the child to reach its pause point, then SIGKILL it."""
    wait_until(marker.exists, process)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def finish(process: subprocess.Popen, timeout: float = 300.0) -> str:
    """Wait for a normal exit (code 0); returns the output."""
    code = process.wait(timeout=timeout)
    text = output_of(process)
    assert code == 0, text[-3000:]
    return text


def make_train_task(folder: Path, train_rows: int = 32, test_rows: int = 6) -> Path:
    """The toy "Is N even?" task with a test file and a carved validation split."""
    from teacher_helpers import TOY_TASK

    def rows(numbers: range) -> str:
        return "".join(
            json.dumps({"question": f"Is {n} even?", "answer": "yes" if n % 2 == 0 else "no"})
            + "\n"
            for n in numbers
        )

    (folder / "toy.jsonl").write_text(rows(range(10, 10 + train_rows)))
    (folder / "test.jsonl").write_text(rows(range(100, 100 + test_rows)))
    path = folder / "toy.yaml"
    path.write_text(
        TOY_TASK.replace(
            "files: {train: toy.jsonl}",
            "files: {train: toy.jsonl, test: test.jsonl}\nvalidation: {from: train, size: 4, seed: 0}",
        )
    )
    return path


def annotate_toy(task: Path, output: Path) -> Path:
    """The toy task's rationale dataset from the scripted teacher (no model, no store)."""
    from teacher_helpers import ScriptedTeacher

    from stepdistill.annotate import annotate

    annotate(str(task), ScriptedTeacher(), output, quiet=True, store=False)
    return output
