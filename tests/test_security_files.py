"""Issue 29, items 6 and 9: hostile task and data files, and clear one-line errors.

Before: a 40k-column CSV took 24.8 s (quadratic), ``{0..99999999}`` in teacher_outputs
built 10^8 names (7.1 GB), a YAML alias bomb hung train, ``files:`` could name any
readable file, and a task without a test split or an unknown teacher option ended in a
traceback."""

from __future__ import annotations

import json
import os
import time

import pytest

from stepdistill.cli import main
from stepdistill.data import DataError, expand_braces, load_splits, read_records
from stepdistill.tasks import TaskError, load_task


def test_wide_csv_is_linear(tmp_path):
    columns = 200_000  # 40k took 24.8 s before; quadratic would make this ~10 min
    path = tmp_path / "wide.csv"
    path.write_text(
        ",".join(f"c{i}" for i in range(columns)) + "\n" + ",".join("v" * columns) + "\n"
    )
    start = time.perf_counter()
    [(line, record)] = list(read_records(path))
    assert time.perf_counter() - start < 5
    assert (line, len(record)) == (2, columns)
    path.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(DataError, match=r"duplicate column\(s\) \['a'\]"):
        list(read_records(path))


def test_brace_range_is_bounded():
    assert expand_braces("x_{0..2}.json") == ["x_0.json", "x_1.json", "x_2.json"]
    start = time.perf_counter()
    with pytest.raises(DataError, match="more than 10000 file names"):
        expand_braces("x_{0..99999999}.json")
    with pytest.raises(DataError, match="more than 10000 file names"):
        expand_braces("x_{0..999}_{0..999}.json")
    assert time.perf_counter() - start < 0.1


def test_yaml_aliases_are_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = "\n".join(lines) + "\nname: t\nfiles: {train: t.jsonl}\ndemonstrations: *a8\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb)  # 10^9 strings once expanded
    start = time.perf_counter()
    with pytest.raises(TaskError, match=r"YAML aliases \(\*a0\) are not allowed"):
        load_task(path)
    assert time.perf_counter() - start < 1


def _task(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t.yaml").write_text(f"name: t\nfiles: {json.dumps(files)}\ninput_fields: [q]\n")
    return load_task(folder / "t.yaml")


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_files_outside_the_task_folder_are_refused(tmp_path, monkeypatch, kind):
    monkeypatch.delenv("STEPDISTILL_ALLOWED_DIRS", raising=False)
    outside = tmp_path / "private" / "secret.jsonl"
    outside.parent.mkdir()
    outside.write_text('{"q": "a secret row"}\n')
    folder = tmp_path / "shared" / "task"
    name = {"dotdot": "../../private/secret.jsonl", "absolute": str(outside)}.get(
        kind, "link.jsonl"
    )
    task = _task(folder, {"train": name})
    if kind == "symlink":
        os.symlink(outside, folder / "link.jsonl")
    with pytest.raises(DataError, match="outside the task's folder .*STEPDISTILL_ALLOWED_DIRS"):
        load_splits(task)
    # The user (not the task file) can allow the folder.
    monkeypatch.setenv("STEPDISTILL_ALLOWED_DIRS", str(outside.parent))
    assert [e.input for e in load_splits(task)["train"]] == ["a secret row"]


def test_files_inside_the_task_folder_still_work(tmp_path):
    folder = tmp_path / "task"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "d.jsonl").write_text('{"q": "x"}\n')
    assert len(load_splits(_task(folder, {"train": "data/../data/d.jsonl"}))["train"]) == 1


def test_task_without_test_split_is_a_one_line_error(tmp_path, capsys):
    folder = tmp_path / "task"
    folder.mkdir()
    (folder / "d.jsonl").write_text(
        "".join(json.dumps({"q": f"q{i}", "a": "x"}) + "\n" for i in range(4))
    )
    (folder / "t.yaml").write_text(
        "name: t\nfiles: {train: d.jsonl}\ninput_fields: [q]\nlabel_field: a\n"
    )
    code = main(["train", "--task", str(folder / "t.yaml"), "--output-dir", str(tmp_path / "runs")])
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error
    assert "no valid or test split" in error and len(error.strip().splitlines()) == 1


def test_unknown_teacher_option_is_a_one_line_error(tmp_path, capsys):
    from teacher_helpers import make_toy_task

    task = make_toy_task(tmp_path)
    code = main(
        [
            "annotate",
            "--task",
            str(task),
            "--teacher",
            "openai",
            "--model",
            "m",
            "--option",
            "colour=blue",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and "unknown option(s) colour" in error
    assert len(error.strip().splitlines()) == 1
