"""The paper benchmark's helper scripts (benchmarks/paper/): teacher_labels.py counts the
teacher's missing and wrong labels in a run's training subsample; tokens.py counts a run's
training tokens and the hours still to train."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from tiny_run import write_sweep

from stepdistill.config import make_config
from stepdistill.sweep import RESULT_FIELDS, expand, load_sweep


@pytest.fixture
def scripts(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks" / "paper"))


def svamp_config(annotations, data_dir, **overrides):
    values = {
        "task": "svamp",
        "mode": "distill",
        "annotations": str(annotations),
        "data_dir": str(data_dir),
        "train_fraction": 0.5,
        "seed": 1,
    }
    return make_config(values | overrides)


def test_teacher_label_counts_agree_with_the_annotation_file(scripts, annotations, data_dir):
    from teacher_labels import label_counts

    from stepdistill.data import load_splits
    from stepdistill.tasks import load_task
    from stepdistill.training_data import training_pool

    config = svamp_config(annotations, data_dir)
    size, missing, kept, wrong = label_counts(config)
    # Counted apart: the subsample's ids looked up in the teacher's annotation file,
    # whose rows say themselves whether the teacher gave a label and whether it was right.
    pool = training_pool(config, load_splits(load_task("svamp"), data_dir)["train"])
    path = annotations / "train.jsonl"
    rows = {row["id"]: row for row in map(json.loads, path.read_text().splitlines())}
    chosen = [rows[example.id] for example in pool]
    expect_missing = sum(row["teacher_label"] is None for row in chosen)
    expect_wrong = sum(
        row["teacher_label"] is not None and not row["teacher_correct"] for row in chosen
    )
    assert size == len(pool) == 360
    assert (missing, kept, wrong) == (expect_missing, size - expect_missing, expect_wrong)
    assert 0 < missing < wrong < kept  # PaLM misses a few and gets about a quarter wrong


def test_teacher_labels_count_each_subsample_once(
    scripts, annotations, data_dir, tmp_path, capsys, monkeypatch
):
    import teacher_labels

    sweep = write_sweep(
        tmp_path,
        {"seed": [0, 1], "mode": ["dss", "distill", "standard"]},
        {
            "task": "svamp",
            "annotations": str(annotations),
            "data_dir": str(data_dir),
            "train_fraction": 0.25,
            "label_source": "teacher",
        },
    )
    monkeypatch.setattr("sys.argv", ["teacher_labels.py", str(sweep)])
    teacher_labels.main()
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| svamp")]
    # dss and distill share each seed's subsample and its labels; standard uses gold labels
    assert [row.split("|")[3].strip() for row in rows] == ["0", "1"]
    assert all(row.split("|")[4].strip() == "180" for row in rows)


def test_training_tokens_count_the_rationale_rows_too(scripts, tiny_causal, annotations, data_dir):
    from tokens import training_tokens

    counts = {
        mode: training_tokens(
            svamp_config(annotations, data_dir, mode=mode, student=str(tiny_causal), train_limit=8)
        )
        for mode in ("standard", "dss")
    }
    assert counts["standard"][0] == counts["dss"][0] == 8
    # dss trains each example twice: the [label] row and the longer [rationale] row
    assert counts["dss"][1] > 2 * counts["standard"][1] > 0


def test_tokens_leave_out_the_runs_already_recorded(
    scripts, tiny_causal, annotations, data_dir, tmp_path, capsys, monkeypatch
):
    import tokens

    sweep = write_sweep(
        tmp_path,
        {"seed": [0, 1], "mode": ["standard"]},
        {
            "task": "svamp",
            "student": str(tiny_causal),
            "annotations": str(annotations),
            "data_dir": str(data_dir),
            "train_limit": 8,
        },
    )
    output = tmp_path / "out"  # the sweep's output_dir

    def hours_left():
        monkeypatch.setattr("sys.argv", ["tokens.py", str(sweep), "--tokens-per-second", "0.01"])
        tokens.main()
        lines = capsys.readouterr().out.splitlines()
        table = [line for line in lines if line.startswith("| t |")]
        total = float(lines[-2].split()[2])
        left = float(lines[-1].split(": ")[1].split()[0])
        return table, total, left

    table, total, left = hours_left()
    assert len(table) == 1 and "(× 2 seeds)" in table[0]  # one line per grid point
    assert total == left > 0
    output.mkdir()
    run_id = table[0].split("|")[2].strip().removesuffix("-s0") + "-s1"
    (output / "results.jsonl").write_text(json.dumps({"run_id": run_id}) + "\n")
    _, total_after, left_after = hours_left()
    assert total_after == total and left_after == pytest.approx(total / 2, abs=0.1)


def test_power_reads_the_discordance_and_needs_fewer_points_with_more_seeds(scripts):
    from power import detectable, discordance, power

    def row(mode, seed, correct):
        return {
            "mode": mode,
            "seed": seed,
            "task": "svamp",
            "train_fraction": 1.0,
            "test_accuracy": correct.count("1") / len(correct),
            "test_correct": correct,
            "test_ids": "same problems",
        }

    rows = [
        row("dss", 0, "1100" * 25),  # 100 problems
        row("standard", 0, "1010" * 25),  # discordant on 50 of them
        row("dss", 1, "1111" * 25),
        row("standard", 1, "1111" * 25),  # none
        row("standard", 2, "1" * 100),  # no dss partner: not counted
    ]
    assert discordance(rows, "dss", "standard", "svamp") == (0.25, 100, 2)
    # no true difference: the test fires about α of the time; a large one: nearly always
    assert power(0.0, 0.2, 200, 3, 2000, 0.05) < 0.08
    assert power(0.15, 0.2, 200, 3, 2000, 0.05) > 0.99
    one, five = (detectable(0.1, 200, s, 0.8, 1000, 0.05) for s in (1, 5))
    assert 0 < five < one < 10


def test_recipes_table_pairs_each_recipe_with_standard_per_task(scripts, tmp_path):
    from recipes_table import parse_source, table

    def row(task, mode, seed, correct, **extra):
        return {
            "run_id": f"{task}-{mode}-{seed}-{extra}",
            "task": task,
            "mode": mode,
            "seed": seed,
            "train_fraction": 1.0,
            "test_accuracy": correct.count("1") / len(correct),
            "test_correct": correct,
            "test_ids": "same problems",
            **extra,
        }

    svamp, cqa = tmp_path / "svamp.jsonl", tmp_path / "cqa.jsonl"
    svamp.write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                row("svamp", "standard", 0, "1100"),
                row("svamp", "dss", 0, "1110"),
                row("svamp", "standard", 1, "1000"),
                row("svamp", "dss", 1, "1100"),
                row("svamp", "dss", 2, "1111"),  # no standard on seed 2: not paired
                row("svamp", "dss", 0, "0000", recipe="dss-llama3"),
            )
        )
        + "\n"
    )
    cqa.write_text(json.dumps(row("cqa", "standard", 0, "10")) + "\n")
    assert parse_source("SVAMP:, 10 epochs=a/b.jsonl") == (
        "SVAMP",
        ", 10 epochs",
        Path("a/b.jsonl"),
    )
    lines = table([parse_source(f"SVAMP={svamp}"), parse_source(f"CQA={cqa}")]).splitlines()
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    cells = {name: rest for name, *rest in split}
    assert list(cells) == ["standard", "dss", "dss-llama3"]
    assert cells["standard"][:2] == ["37.5 ± 12.5 (2 seeds)", "—"]
    assert cells["standard"][2:] == ["50.0 (1 seed)", "—"]
    # dss over its three seeds; the difference over the two paired ones, +25 each
    assert cells["dss"][0] == "75.0 ± 14.4 (3 seeds)"
    assert cells["dss"][1].startswith("+25.0 ± 0.0 [") and "p = 0.5" in cells["dss"][1]
    assert cells["dss"][1].endswith("; seed t [+25.0, +25.0], 2 of 2 higher")
    # one seed paired where standard ran two: no seed interval, and standard's mean on it
    assert cells["dss-llama3"][1].startswith("-50.0 [")
    assert cells["dss-llama3"][1].endswith(
        "; 0 of 1 higher (paired on 1 seed: standard 50.0 on it)"
    )
    assert cells["dss"][2:] == ["not run", ""]
    with pytest.raises(SystemExit, match="expected COLUMN=RESULTS"):
        parse_source("no-equals-sign")


def test_committed_sweeps_expand_and_own_every_committed_row(monkeypatch):
    """Each sweep file under benchmarks/paper/ expands to unique runs, and every row of a
    committed results file is a run of the sweeps writing there, with the task, mode,
    fraction, student and seed the row records: an edit to a sweep that renamed its
    finished runs would retrain them (hours) on the next resume, one that changed them
    under their names would mix two experiments in one table."""
    monkeypatch.chdir(REPO)
    runs: dict[str, dict[str, Any]] = {}
    sweep_files = sorted(Path("benchmarks/paper").glob("*.yaml"))
    assert sweep_files
    for path in sweep_files:
        spec = load_sweep(path)
        runs.setdefault(spec["output_dir"], {}).update({c.run_name: c for c in expand(spec)})
    fields = [f for f in RESULT_FIELDS if f != "label_source"]  # the row's: the labels it read
    for folder, configs in runs.items():
        results = Path(folder) / "results.jsonl"
        if not results.is_file():
            continue
        for row in map(json.loads, results.open(encoding="utf-8")):
            assert row["run_id"] in configs, f"{results}: {row['run_id']} is a run of no sweep"
            config = configs[row["run_id"]]
            recorded = {f: row[f] for f in fields if f in row}  # older rows lack some
            assert recorded == {f: getattr(config, f) for f in recorded}, row["run_id"]
