"""`stepdistill train` under `accelerate launch` with 2 CPU processes is the same run
as in one process: same per-step losses, same final weights."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import scramble, train_command

from stepdistill.cli import main


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The single-process runs here use one thread, as each launched process does."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def student(tiny_causal, tmp_path_factory):
    """The tiny model with large random weights: its default init answers EOS at once,
    and the predictions compared below should be real text."""
    folder = tmp_path_factory.mktemp("student") / "model"
    shutil.copytree(tiny_causal, folder)
    scramble(folder)
    return folder


def arguments(student, annotations, data_dir, output, bf16):
    # 13 examples in batches of 6: the last batch of each epoch (1 example) leaves one
    # process without any row, which must still take part in the step.
    return train_command(
        student,
        annotations,
        output,
        data_dir=data_dir,
        max_steps=4,
        batch_size=6,
        train_limit=13,
        eval_limit=6,
        learning_rate="3e-3",
        bf16=bf16,
        threads=1,
    )


def launch(args, processes=2):
    """`accelerate launch` of the real CLI. --multi_gpu spawns the processes (torchrun);
    the trainer itself always runs on CPU, with gloo between processes."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with socket.socket() as probe:  # a free port for the processes to meet on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        "-m",
        "stepdistill.cli",
        *args,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def losses(run):
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def weights(run):
    return load_file(run / "model" / "model.safetensors")


@pytest.mark.parametrize("bf16", [False, True])
def test_two_processes_train_like_one(student, annotations, data_dir, tmp_path, bf16):
    common = arguments(student, annotations, data_dir, tmp_path, bf16)
    assert main(common + ["--run-name", "one"]) == 0
    done = launch(common + ["--run-name", "two"])
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "one",
        "two",
    ]  # rank 1 made no folder of its own
    assert (
        json.loads(done.stdout[done.stdout.index("{") :])["processes"] == 2
    )  # rank 0 reports, once
    assert json.loads((two / "metrics.json").read_text())["processes"] == 2

    # Tolerances. fp32: the processes compute the same sums in another order and grouping
    # (other packed sequences and micro-batches, then a two-way sum), so they agree to
    # float rounding. Measured: losses equal to the 5 decimals logged (compared with 2e-5
    # for the rounding), weights within 2e-6 after moving up to 7e-3. Adam moves each
    # weight by about ±lr whatever its gradient's size, so for a near-zero gradient
    # rounding can grow to 2·lr a step; 1e-5 leaves room for that. Normalising the loss
    # per process and averaging the gradients (the usual DDP mean) is 1e-2 off.
    # bf16: each process rounds its gradients to bf16 in other groupings before the fp32
    # sum (one process accumulates all micro-batches in bf16), so the runs agree only to
    # bf16 precision (2^-8 = 4e-3): losses within 1e-2 (measured 2.2e-3; a sanity check,
    # per-process normalisation is as close), and the weights' difference is 2 % of how
    # far they moved (per-process normalisation: 16 %).
    a, b = losses(one), losses(two)
    assert [row["step"] for row in a] == [row["step"] for row in b] == [1, 2, 3, 4]
    for row_a, row_b in zip(a, b, strict=True):
        for key in ("loss", "label_loss", "rationale_loss"):
            assert row_b[key] == pytest.approx(row_a[key], rel=1e-2 if bf16 else 1e-6, abs=2e-5), (
                row_a,
                row_b,
            )
    start, w1, w2 = load_file(student / "model.safetensors"), weights(one), weights(two)
    assert w1.keys() == w2.keys()
    difference = torch.cat([(w1[name] - w2[name]).flatten() for name in w1])
    moved = torch.cat([(w1[name] - start[name]).flatten() for name in w1])
    assert (
        float(moved.abs().max()) > 1e-3
    )  # training changed the weights, so agreement means something
    if bf16:
        assert float(difference.norm() / moved.norm()) < 0.05
    else:
        assert float(difference.abs().max()) < 1e-5
        # Evaluation is sharded over the processes and gathered: the same predictions.
        assert any(
            json.loads(line)["raw"]
            for line in (two / "predictions" / "test.jsonl").read_text().splitlines()
        )
        assert (one / "predictions" / "test.jsonl").read_text() == (
            two / "predictions" / "test.jsonl"
        ).read_text()


def test_a_batch_is_dealt_once_and_evenly_over_the_processes(monkeypatch):
    from stepdistill.parallel import Processes, shard

    sizes = [50, 10, 40, 30, 20, 60, 5]
    batch = [6, 0, 3, 5, 2]
    shares = []
    for rank in range(2):
        processes = Processes()  # one process here; pretend to be each rank of two
        processes.world, processes.rank = 2, rank
        shares.append(shard(batch, sizes, processes))
    assert sorted(shares[0] + shares[1]) == sorted(batch)
    # Longest first to the lighter process: 60, 50, 40 (to 50), 30 (to 60), 5.
    assert shares == [[6, 3, 5], [0, 2]] and [sum(sizes[i] for i in share) for share in shares] == [
        95,
        90,
    ]
    one = Processes()
    assert one.world == 1 and shard(batch, sizes, one) == batch


def test_fsdp_and_deepspeed_launches_are_refused(monkeypatch):
    from stepdistill.parallel import Processes

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.setenv(name, "true")
        with pytest.raises(ValueError, match="FSDP / DeepSpeed"):
            Processes()
        monkeypatch.delenv(name)
