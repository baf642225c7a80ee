"""Hugging Face datasets as task input (``hf:`` in a task file), offline: datasets written
with ``save_to_disk`` and as Parquet files read to the same examples as the rows in JSONL."""

from __future__ import annotations

import json

import pytest

from stepdistill.data import DataError, load_splits
from stepdistill.tasks import TaskError, load_task

datasets = pytest.importorskip("datasets")

TRAIN = [
    {"q": "two plus two", "answer": "yes", "n": 1, "choices": ["a", "b"]},
    {"q": "sky is green", "answer": "no", "n": 2, "choices": ["c", "d"]},
    {"q": "water is wet", "answer": "yes", "n": 3, "choices": ["e", "f"]},
]
VALIDATION = [{"q": "fire is cold", "answer": "no", "n": 4, "choices": ["g", "h"]}]
TASK = "input_template: '{q} ({choices[0]})'\nlabel_field: answer\nlabels: [yes, no]\n"


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    """Nothing leaves the machine, and datasets' cache lives in the test's folder."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.delenv("STEPDISTILL_ALLOWED_DIRS", raising=False)


def write_task(folder, body: str, name: str = "t.yaml"):
    path = folder / name
    path.write_text("name: t\n" + body + TASK)
    return path


def dataset_dict():
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(TRAIN),
            "validation": datasets.Dataset.from_list(VALIDATION),
        }
    )


def jsonl_splits(tmp_path):
    folder = tmp_path / "jsonl"
    folder.mkdir()
    for name, rows in (("train", TRAIN), ("test", VALIDATION)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_splits(
        load_task(write_task(folder, "files: {train: train.jsonl, test: test.jsonl}\n"))
    )


def same(got, want):
    assert set(got) == set(want)
    for split in want:
        assert [
            (e.id, e.split, e.input, e.label, e.source_index, e.record) for e in got[split]
        ] == [(e.id, e.split, e.input, e.label, e.source_index, e.record) for e in want[split]]


def test_save_to_disk_reads_like_jsonl(tmp_path):
    dataset_dict().save_to_disk(str(tmp_path / "saved"))
    task = write_task(tmp_path, "hf: {path: saved, splits: {train: train, test: validation}}\n")
    got = load_splits(load_task(task))
    same(got, jsonl_splits(tmp_path))
    assert [e.id for e in got["train"]] == ["train-0", "train-1", "train-2"]
    assert got["test"][0].input == "fire is cold (g)" and got["test"][0].label == "no"


def test_single_saved_dataset_is_its_split(tmp_path):
    datasets.Dataset.from_list(TRAIN).save_to_disk(str(tmp_path / "one"))
    task = write_task(tmp_path, "hf: {path: ./one, splits: {train: train}}\n")
    assert [e.input for e in load_splits(load_task(task))["train"]] == [
        "two plus two (a)",
        "sky is green (c)",
        "water is wet (e)",
    ]


def test_parquet_folder_and_file_read_like_jsonl(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    datasets.Dataset.from_list(TRAIN).to_parquet(str(folder / "train.parquet"))
    datasets.Dataset.from_list(VALIDATION).to_parquet(str(folder / "validation.parquet"))
    task = write_task(tmp_path, "hf: {path: pq, splits: {train: train, test: validation}}\n")
    same(load_splits(load_task(task)), jsonl_splits(tmp_path))

    one = write_task(tmp_path, "hf: {path: pq/train.parquet, splits: {train: train}}\n", "one.yaml")
    assert [e.record for e in load_splits(load_task(one))["train"]] == TRAIN


def test_validation_carved_and_id_field(tmp_path):
    rows = [dict(r, key=f"k{i}") for i, r in enumerate(TRAIN * 4)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "saved")
    )
    task = write_task(
        tmp_path,
        "hf: {path: saved, splits: {train: train}}\nid_field: key\n"
        "validation: {from: train, size: 3, seed: 0}\n",
    )
    splits = load_splits(load_task(task))
    assert len(splits["valid"]) == 3 and len(splits["train"]) == 9
    assert {e.id for e in splits["valid"] + splits["train"]} == {f"k{i}" for i in range(12)}


def test_missing_column_names_it_and_lists_columns(tmp_path):
    dataset_dict().save_to_disk(str(tmp_path / "saved"))
    task = tmp_path / "t.yaml"
    task.write_text(
        "name: t\nhf: {path: saved, splits: {train: train}}\ninput_fields: [question]\n"
    )
    with pytest.raises(DataError) as error:
        load_splits(load_task(task))
    message = str(error.value)
    assert "\n" not in message
    assert "'saved'" in message and "no column 'question'" in message
    assert "['q', 'answer', 'n', 'choices']" in message

    task.write_text(
        "name: t\nhf: {path: saved, splits: {train: train}}\ninput_fields: [q]\nlabel_field: gold\n"
    )
    with pytest.raises(DataError, match=r"no column 'gold'.*\['q', 'answer', 'n', 'choices'\]"):
        load_splits(load_task(task))


def test_unknown_split_names_it_and_lists_splits(tmp_path):
    dataset_dict().save_to_disk(str(tmp_path / "saved"))
    task = write_task(tmp_path, "hf: {path: saved, splits: {train: train, test: test}}\n")
    with pytest.raises(DataError) as error:
        load_splits(load_task(task))
    message = str(error.value)
    assert "\n" not in message
    assert (
        message
        == "hf dataset 'saved': no split 'test' (hf.splits.test); it has ['train', 'validation']"
    )


def test_local_path_not_found_says_offline(tmp_path):
    task = write_task(tmp_path, "hf: {path: ./nowhere, splits: {train: train}}\n")
    with pytest.raises(DataError) as error:
        load_splits(load_task(task))
    message = str(error.value)
    assert "\n" not in message
    assert "hf dataset './nowhere': not found" in message
    assert str(tmp_path / "nowhere") in message and "HF_HUB_OFFLINE is set" in message


def test_hub_id_not_found_offline(tmp_path, monkeypatch):
    """A hub id goes to datasets.load_dataset (replaced here: tests never ask the hub)."""
    asked = []

    def offline_load(path, name=None, **kwargs):
        asked.append((path, name))
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline_load)
    task = write_task(tmp_path, "hf: {path: someone/absent, name: cfg, splits: {train: train}}\n")
    with pytest.raises(DataError) as error:
        load_splits(load_task(task))
    message = str(error.value)
    assert asked == [("someone/absent", "cfg")]
    assert "\n" not in message
    assert message.startswith("hf dataset 'someone/absent': not found")
    assert "HF_HUB_OFFLINE is set" in message

    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(DataError) as error:
        load_splits(load_task(task))
    assert "HF_HUB_OFFLINE" not in str(error.value)


def test_path_outside_the_task_folder_is_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    dataset_dict().save_to_disk(str(tmp_path / "saved"))
    task = write_task(tmp_path / "sub", "hf: {path: ../saved, splits: {train: train}}\n")
    with pytest.raises(DataError, match="outside the task's folder"):
        load_splits(load_task(task))


@pytest.mark.parametrize(
    ("hf", "expected"),
    [
        ("{splits: {train: train}}", "hf needs a path"),
        ("{path: x}", "hf.splits must map"),
        ("{path: x, splits: {train: train}, revision: main}", "unknown hf field"),
        ("[x]", "field 'hf' must be a mapping"),
        ("{path: x, splits: {valid: validation}}", "hf.splits must name at least a train or test"),
    ],
)
def test_bad_hf_field(tmp_path, hf, expected):
    task = tmp_path / "t.yaml"
    task.write_text(f"name: t\nhf: {hf}\n")
    with pytest.raises(TaskError, match=expected):
        load_task(task)


def test_files_and_hf_together_refused(tmp_path):
    task = tmp_path / "t.yaml"
    task.write_text("name: t\nfiles: {train: a.jsonl}\nhf: {path: x, splits: {train: train}}\n")
    with pytest.raises(TaskError, match="either files or hf"):
        load_task(task)
