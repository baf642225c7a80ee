import json
from pathlib import Path

import pytest

from stepdistill.data import DataError, data_dir, load_splits, read_records
from stepdistill.tasks import TaskError, builtin_names, load_task


def test_builtin_registry_lists_the_four_benchmarks():
    assert set(builtin_names()) >= {"svamp", "cqa", "esnli", "anli1"}


def test_unknown_task_lists_the_choices():
    with pytest.raises(TaskError, match="svamp"):
        load_task("nope")


def test_svamp_splits_follow_the_paper(data_dir):
    splits = load_splits(load_task("svamp"), data_dir)
    assert {k: len(v) for k, v in splits.items()} == {"train": 720, "valid": 80, "test": 200}
    ids = [set(e.id for e in splits[s]) for s in ("train", "valid")]
    assert not ids[0] & ids[1]
    again = load_splits(load_task("svamp"), data_dir)
    assert [e.id for e in again["valid"]] == [e.id for e in splits["valid"]]  # fixed carve
    example = splits["test"][0]
    assert "\n" in example.input and example.label.startswith("(")


def test_cqa_input_format_and_label(data_dir):
    example = load_splits(load_task("cqa"), data_dir)["test"][0]
    assert "\nAnswer Choices:\n(a) " in example.input and "\n(e) " in example.input
    assert example.label in example.record["choices"]


@pytest.mark.parametrize("name, pool", [("esnli", 9842), ("anli1", 1000)])
def test_nli_training_pool_is_the_valid_file(data_dir, name, pool):
    splits = load_splits(load_task(name), data_dir)
    assert len(splits["train"]) + len(splits["valid"]) == pool
    assert splits["train"][0].label in ("entailment", "neutral", "contradiction")


def test_missing_data_folder_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="dss"):
        data_dir(tmp_path / "nowhere")


def test_custom_task_from_yaml_with_unlabeled_jsonl_and_csv(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"q": "Is the sky blue?"}) + "\n" + json.dumps({"q": "Is fire cold?"}) + "\n"
    )
    (tmp_path / "test.csv").write_text('q,a\n"Is water wet?",yes\n"Multi\nline?",no\n')
    (tmp_path / "task.yaml").write_text(
        "name: mine\nfiles: {train: train.jsonl, test: test.csv}\ninput_fields: [q]\n"
        "label_field: a\nlabels: [yes, no]\nvalidation: {from: train, size: 1}\n"
    )
    task = load_task(tmp_path / "task.yaml")
    splits = load_splits(task)
    assert len(splits["train"]) == 1 and len(splits["valid"]) == 1
    assert all(e.label is None for e in splits["train"])  # unlabeled is fine
    assert [e.label for e in splits["test"]] == ["yes", "no"]
    assert splits["test"][1].input == "Multi\nline?"


def test_custom_task_rejects_unknown_fields(tmp_path):
    (tmp_path / "t.yaml").write_text("name: x\nfiles: {train: a.jsonl}\nlabelz: y\n")
    with pytest.raises(TaskError, match="labelz"):
        load_task(tmp_path / "t.yaml")


def test_malformed_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "a", "label": "1"}\n{"input": "b", \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid JSON"):
        list(read_records(path))


def test_missing_field_names_file_line_and_field(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        '{"input": "a", "label": "1"}\n{"text": "b", "label": "2"}\n'
    )
    (tmp_path / "t.yaml").write_text("name: t\nfiles: {train: train.jsonl}\nlabel_field: label\n")
    with pytest.raises(DataError, match=r"train.jsonl:2: missing field 'input'"):
        load_splits(load_task(tmp_path / "t.yaml"))


def test_label_outside_the_label_set_is_an_error(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"input": "a", "label": "maybe"}\n')
    (tmp_path / "t.yaml").write_text(
        "name: t\nfiles: {train: train.jsonl}\nlabel_field: label\nlabels: [yes, no]\n"
    )
    with pytest.raises(DataError, match=r"train.jsonl:1: label 'maybe'"):
        load_splits(load_task(tmp_path / "t.yaml"))


def test_csv_with_missing_values_names_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(DataError, match=r"d.csv:3: fewer values"):
        list(read_records(path))


def test_invalid_utf8_is_reported(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"input": "\xff"}\n')
    with pytest.raises(DataError, match="UTF-8"):
        list(read_records(path))


def test_duplicate_ids_are_reported(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"id": 1, "input": "a"}\n{"id": 1, "input": "b"}\n')
    (tmp_path / "t.yaml").write_text("name: t\nfiles: {train: train.jsonl}\nid_field: id\n")
    with pytest.raises(DataError, match=r":2: duplicate id '1'"):
        load_splits(load_task(tmp_path / "t.yaml"))


def test_paths_in_custom_tasks_are_relative_to_the_yaml(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "train.jsonl").write_text('{"input": "a"}\n')
    (tmp_path / "sub" / "t.yaml").write_text("name: t\nfiles: {train: train.jsonl}\n")
    assert load_task(tmp_path / "sub" / "t.yaml").base_dir == Path(tmp_path / "sub").resolve()
