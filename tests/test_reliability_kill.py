"""kill -9 anywhere: train, sweep, predict, annotate (hf backend) and the response store.

Each test runs the real CLI in a subprocess, sends SIGKILL at a chosen point (see
``reliability_helpers``), runs the same command again and checks that the end state
is what an uninterrupted run gives. The appenders (predictions, sweep results) are
also cut at every byte offset, which covers every point a kill can tear a line.
The figures are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from reliability_helpers import (
    annotate_toy,
    child_env,
    finish,
    kill_at_pause,
    make_train_task,
    output_of,
    start_cli,
    wait_until,
)
from tiny_run import train_command

from stepdistill.io import atomic_write_text, cut_torn_tail, write_jsonl
from stepdistill.predict import existing_ids, predict
from stepdistill.sweep import append_result, read_results


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy task with train / valid / test and its scripted-teacher rationales."""
    folder = tmp_path_factory.mktemp("toy")
    task = make_train_task(folder)
    return task, annotate_toy(task, folder / "annotations")


def train_args(task: Path, annotations: Path, student: Path, runs: Path) -> list[str]:
    # 28 training examples, batch 2: 14 steps an epoch, so the only validation is at
    # step 12 and the saved (best) weights are the final ones; a checkpoint every 2.
    return train_command(
        student,
        annotations,
        runs,
        task=task,
        max_steps=12,
        batch_size=2,
        eval_limit=4,
        checkpoint_every=2,
        learning_rate="3e-3",
        threads=1,
        max_rationale_tokens=8,
    )


def checkpoint_step(folder: Path) -> int:
    import torch

    return int(torch.load(folder / "state.pt", weights_only=False)["step"])


@pytest.mark.slow
def test_train_killed_three_ways_resumes_to_the_same_weights(toy, tiny_causal, tmp_path):
    from safetensors.torch import load_file

    task, annotations = toy
    runs = tmp_path / "runs"
    common = train_args(task, annotations, tiny_causal, runs)
    started = time.monotonic()
    whole = start_cli([*common, "--run-name", "whole"], tmp_path)[0]
    finish(whole)
    killed = runs / "killed"
    figures = []

    # 1. Mid-step 5: the last checkpoint is step 4.
    process, marker = start_cli([*common, "--run-name", "killed"], tmp_path, pause="step:5")
    kill_at_pause(process, marker)
    assert checkpoint_step(killed / "checkpoint") == 4
    assert not (killed / "metrics.json").exists() and not (killed / "model").exists()
    figures.append("mid-step 5 (checkpoint 4)")

    # 2. Resumed, then killed half-way through writing the step-8 checkpoint.
    process, marker = start_cli(["train", "--resume", str(killed)], tmp_path, pause="torn-save:2")
    kill_at_pause(process, marker)
    assert "at step 4" in output_of(process)
    torn = (killed / "checkpoint.tmp" / "state.pt").stat().st_size
    whole_size = (killed / "checkpoint" / "state.pt").stat().st_size
    assert 0 < torn < whole_size and checkpoint_step(killed / "checkpoint") == 6
    figures.append(f"mid-write of checkpoint 8 ({torn} of ~{whole_size} bytes)")

    # 3. Resumed, then killed between the two renames that publish checkpoint 8.
    process, marker = start_cli(["train", "--resume", str(killed)], tmp_path, pause="rename:1")
    kill_at_pause(process, marker)
    assert "at step 6" in output_of(process)
    assert not (killed / "checkpoint").exists() and checkpoint_step(killed / "checkpoint.old") == 6
    assert checkpoint_step(killed / "checkpoint.tmp") == 8
    figures.append("between the renames of checkpoint 8")

    # 4. Resumed to the end (from checkpoint.old, step 6). A kill during a save of the best
    # weights leaves their temporary file; the finished run removes it too.
    (killed / "best-weights.pt.tmp").write_bytes(b"torn")
    process, _ = start_cli(["train", "--resume", str(killed)], tmp_path)
    assert "at step 6" in finish(process)

    expected = load_file(runs / "whole" / "model" / "model.safetensors")
    resumed = load_file(killed / "model" / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(expected[name].equal(resumed[name]) for name in expected)
    logs = [
        [
            json.loads(line)["loss"]
            for line in (runs / name / "train_log.jsonl").read_text().splitlines()
        ]
        for name in ("whole", "killed")
    ]
    assert logs[0] == logs[1] and len(logs[0]) == 12
    metrics = [
        json.loads((runs / name / "metrics.json").read_text()) for name in ("whole", "killed")
    ]
    assert (
        metrics[0]["valid_history"] == metrics[1]["valid_history"]
        and metrics[0]["test_accuracy"] == metrics[1]["test_accuracy"]
    )
    leftovers = [
        p.name for p in killed.iterdir() if p.name.startswith(("checkpoint", "best-weights", "."))
    ]
    assert leftovers == []
    print(
        f"\ntrain kill -9: {len(figures)} kills ({'; '.join(figures)}), resumed from steps 4, 6, 6; "
        f"{len(expected)} tensors equal to the uninterrupted run, 12/12 losses equal; {time.monotonic() - started:.1f} s"
    )


@pytest.mark.slow
def test_sweep_killed_mid_run_and_mid_append_ends_with_one_row_per_run(toy, tiny_causal, tmp_path):
    task, annotations = toy
    output = tmp_path / "sweep"
    base = {
        "task": str(task),
        "mode": "dss",
        "student": str(tiny_causal),
        "annotations": str(annotations),
        "max_steps": 4,
        "batch_size": 4,
        "eval_limit": 2,
        "checkpoint_every": 1,
        "learning_rate": 3e-3,
        "threads": 1,
        "max_rationale_tokens": 4,
    }
    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        json.dumps(
            {"name": "kill", "output_dir": str(output), "base": base, "grid": {"seed": [0, 1, 2]}}
        )
    )
    ids = [f"toy-dss-f1-{tiny_causal.name}-s{seed}" for seed in range(3)]
    results = output / "results.jsonl"
    started = time.monotonic()

    # 1. Killed in the second run's second step (after its step-1 checkpoint).
    process, marker = start_cli(["sweep", str(spec)], tmp_path, pause="step:6")
    kill_at_pause(process, marker)
    assert [row["run_id"] for row in read_results(results)] == ids[:1]
    assert (output / "runs" / ids[1] / "checkpoint").is_dir()

    # 2. Rerun: the second run resumes from its checkpoint; killed half-way through its row.
    process, marker = start_cli(["sweep", str(spec)], tmp_path, pause="append:1")
    kill_at_pause(process, marker)
    assert "(resuming" in output_of(process) and "1 done, 2 to run" in output_of(process)
    torn = results.read_bytes()
    assert not torn.endswith(b"\n") and (output / "runs" / ids[1] / "metrics.json").is_file()

    # 3. Rerun: the torn row is cut, the trained run recorded without training, the last run trained.
    process, _ = start_cli(["sweep", str(spec)], tmp_path)
    text = finish(process)
    assert "1 done, 2 to run" in text and "(trained; recording it)" in text
    data = results.read_bytes()
    lines = data.decode().splitlines()
    assert data.endswith(b"\n") and all(isinstance(json.loads(line), dict) for line in lines)
    assert sorted(row["run_id"] for row in read_results(results)) == ids and len(lines) == 3
    folders = sorted(p.name for p in (output / "runs").iterdir())
    assert folders == ids  # no run trained twice into a "-2" folder
    assert all(
        (output / "runs" / name / "metrics.json").is_file()
        and not (output / "runs" / name / "checkpoint").exists()
        for name in ids
    )
    process, _ = start_cli(["sweep", str(spec)], tmp_path)
    assert "3 done, 0 to run" in finish(process)
    print(
        f"\nsweep kill -9: 2 kills (mid-step in run 2; mid-append, {len(torn) - len(lines[0]) - 1} torn bytes cut); "
        f"3 rows for 3 runs, 0 torn lines, 0 runs trained twice; {time.monotonic() - started:.1f} s"
    )


RECORDS = [
    {"id": f"r{i}", "premise": f"premise {i}", "hypothesis": f"hypothesis {i * 7}"}
    for i in range(24)
]


@pytest.fixture(scope="module")
def predict_run(tiny_causal, tmp_path_factory):
    from tiny_run import make_run

    return make_run(tiny_causal, tmp_path_factory.mktemp("predict-kill") / "run")


@pytest.fixture(scope="module")
def uninterrupted(predict_run, tmp_path_factory):
    """The output of a predict run that nothing interrupted (one torch thread, as the children)."""
    import torch

    folder = tmp_path_factory.mktemp("predict-whole")
    source = folder / "in.jsonl"
    write_jsonl(source, RECORDS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict(predict_run, source, folder / "out.jsonl", chunk_size=4, progress=False)
    finally:
        torch.set_num_threads(threads)
    return source, (folder / "out.jsonl").read_bytes()


def test_predict_killed_mid_chunk_resumes_to_the_same_output(predict_run, uninterrupted, tmp_path):
    source, expected = uninterrupted
    out = tmp_path / "out.jsonl"
    args = [
        "predict",
        str(predict_run),
        "--input",
        str(source),
        "--output",
        str(out),
        "--chunk-size",
        "4",
    ]
    started = time.monotonic()
    process, marker = start_cli(
        args, tmp_path, pause="predict:4"
    )  # 3 chunks written, the 4th in the model
    kill_at_pause(process, marker)
    written = out.read_bytes()
    assert written.count(b"\n") == 12 and written.endswith(b"\n")
    process, _ = start_cli(args, tmp_path)
    text = finish(process)
    summary = json.loads(text[text.index('{\n  "output"') :])
    assert summary == {"output": str(out), "records": 24, "skipped": 12, "predicted": 12}
    assert out.read_bytes() == expected
    print(
        f"\npredict kill -9: killed after 12/24 rows, rerun skipped 12 and predicted 12, output byte-identical; "
        f"{time.monotonic() - started:.1f} s"
    )


def test_predict_output_torn_at_every_byte_resumes_correctly(predict_run, uninterrupted, tmp_path):
    source, expected = uninterrupted
    lines = expected.split(b"\n")[:-1]
    ends = [sum(len(line) + 1 for line in lines[: i + 1]) for i in range(len(lines))]
    out = tmp_path / "out.jsonl"
    for offset in range(len(expected) + 1):  # every point a kill can stop a write
        out.write_bytes(expected[:offset])
        complete = sum(1 for end in ends if end <= offset)
        assert existing_ids(out) == {f"r{i}" for i in range(complete)}, offset
        assert out.read_bytes() == expected[: ends[complete - 1] if complete else 0], offset
    # Resume from a few of those points: always the uninterrupted output.
    samples = [ends[5] - 7, ends[5], len(expected) - 2]  # mid-line, at a line end, in the last line
    for offset in samples:
        out.write_bytes(expected[:offset])
        summary = predict(predict_run, source, out, chunk_size=4, progress=False)
        assert (
            summary["skipped"] == sum(1 for end in ends if end <= offset)
            and out.read_bytes() == expected
        ), offset
    print(
        f"\npredict torn output: {len(expected) + 1} cut points checked ({len(lines)} rows), {len(samples)} resumed byte-identical"
    )


def test_sweep_results_torn_at_every_byte_then_appended_have_no_torn_line(tmp_path):
    path = tmp_path / "results.jsonl"
    rows = [{"run_id": f"run-{i}", "test_accuracy": i / 10, "note": "é" * i} for i in range(5)]
    for row in rows:
        append_result(path, row)
    full = path.read_bytes()
    new = {"run_id": "run-new", "test_accuracy": 1.0}
    for offset in range(len(full) + 1):
        path.write_bytes(full[:offset])
        append_result(path, new)
        data = path.read_bytes()
        assert data.endswith(b"\n")
        parsed = [json.loads(line) for line in data.decode().splitlines()]  # no torn line anywhere
        assert parsed == [*rows[: len(parsed) - 1], new], offset
        assert read_results(path) == parsed
    print(
        f"\nsweep results torn: {len(full) + 1} cut points, each repaired on the next append (0 torn lines left)"
    )


def test_atomic_write_interrupted_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old\n")

    def crash(*_):
        raise KeyboardInterrupt  # as a kill between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new " * 10_000)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == [
        "summary.json"
    ]
    monkeypatch.undo()
    assert cut_torn_tail(tmp_path / "missing.jsonl") == 0


def test_annotate_hf_killed_mid_store_asks_only_the_rest(tiny_causal, tmp_path):
    from teacher_helpers import make_toy_task

    task = make_toy_task(tmp_path, count=8)
    out = tmp_path / "out"
    args = [
        "annotate",
        "--task",
        str(task),
        "--teacher",
        "hf",
        "--model",
        str(tiny_causal),
        "--option",
        "max_tokens=4",
        "--option",
        "batch_size=1",
        "--output",
        str(out),
        "--splits",
        "train",
    ]
    started = time.monotonic()
    process, marker = start_cli(
        args, tmp_path, pause="put:4"
    )  # 3 answers committed, the 4th on its way
    kill_at_pause(process, marker)
    assert not (out / "train.jsonl").exists() and not (out / "summary.json").exists()
    with closing(sqlite3.connect(out / "store.sqlite")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        before = dict(db.execute("SELECT prompt, text FROM responses").fetchall())
    assert len(before) == 3
    process, _ = start_cli(args, tmp_path)
    finish(process)
    summary = json.loads((out / "summary.json").read_text())
    assert {k: summary["store"][k] for k in ("answered_from_store", "asked")} == {
        "answered_from_store": 3,
        "asked": 5,
    }
    rows = json.loads("[" + ",".join((out / "train.jsonl").read_text().splitlines()) + "]")
    assert len(rows) == 8 and [row["id"] for row in rows] == [f"train-{i}" for i in range(8)]
    with closing(sqlite3.connect(out / "store.sqlite")) as db:
        after = dict(db.execute("SELECT prompt, text FROM responses").fetchall())
    assert len(after) == 8 and all(after[prompt] == text for prompt, text in before.items())
    print(
        f"\nannotate (hf) kill -9: 3/8 answers stored at the kill, rerun asked 5 and reused 3; {time.monotonic() - started:.1f} s"
    )


STORE_WRITER = r"""
import sys
from stepdistill.data import Example
from stepdistill.teachers import Completion, Request
from stepdistill.teachers.store import Store
store = Store(sys.argv[1])
index = store.count()
while True:  # big answers, so that most of the time is spent inside SQLite writes
    example = Example(id=f"e{index}", split="train", input="x", label=None, source_split="train", source_index=index)
    request = Request(example, f"prompt {index}")
    store.put(f"key-{index}", {"model": "m"}, Completion(request, str(index % 10) * 200_000, usage={"prompt_tokens": 1}))
    index += 1
"""


def test_store_survives_kill_9_mid_write(tmp_path):
    from stepdistill.teachers.store import Store

    path = tmp_path / "store.sqlite"
    figures = []
    count = 0
    for _ in range(4):  # four kills, each once at least 5 more answers are in
        process = subprocess.Popen(
            [sys.executable, "-c", STORE_WRITER, str(path)], env=child_env(), stderr=subprocess.PIPE
        )
        target = count + 5

        def stored(target: int = target) -> bool:
            try:
                with closing(sqlite3.connect(path, timeout=5)) as db:
                    return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= target
            except sqlite3.OperationalError:  # not created yet
                return False

        wait_until(stored, process, timeout=120)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        wal = path.with_name(path.name + "-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        with Store(path) as store:  # reopening recovers from the WAL
            db = store.db
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            count = store.count()
            texts = db.execute("SELECT key, text FROM responses").fetchall()
            assert all(
                text == key.split("-")[1][-1] * 200_000 for key, text in texts
            )  # no half-written answer
            linked = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            assert linked == count  # an answer and its request row commit together
            assert sorted(int(key.split("-")[1]) for key, _ in texts) == list(
                range(count)
            )  # no gap
        figures.append(f"{count} rows (WAL {wal_bytes // 1024} KiB)")
        assert count >= target
    print(
        f"\nstore kill -9 mid-write: {len(figures)} kills -> "
        + ", ".join(figures)
        + "; integrity ok every time"
    )
