"""Hostile and malformed input files: every one is an error naming the file, the line
(the file's physical line) and the problem, and nothing partial is written.

What test_tasks_and_data.py and test_predict.py already prove (malformed JSON lines,
a missing field, a label outside the set, a short CSV row, invalid UTF-8 somewhere,
duplicate ids in JSON lines, unknown task keys) is not repeated here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from stepdistill.annotate import annotate
from stepdistill.data import DataError, load_splits, read_records
from stepdistill.tasks import TaskError, load_task

TASK = "name: t\nfiles: {train: FILE}\ninput_fields: [q]\nlabel_field: a\nlabels: [yes, no]\nid_field: id\n"
MB = 1024 * 1024


def write_task(folder: Path, name: str, content: bytes) -> Path:
    (folder / name).write_bytes(content)
    path = folder / "t.yaml"
    path.write_text(TASK.replace("FILE", name))
    return path


def jl(*rows: object) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


OK = {"id": 1, "q": "Is it?", "a": "yes"}

# (file name, content, line, words the message must hold)
BAD_FILES = [
    # JSON lines
    ("d.jsonl", jl(OK) + b'{"id": 2, "q": "caf\xe9"}\n', 2, "not valid UTF-8"),
    ("d.jsonl", jl(OK) + b'{"id": 2, "q": "trunc', 2, "truncated"),
    ("d.jsonl", jl(OK, {"id": 2, "q": ["a", "list"]}), 2, "field 'q' is a list; expected text"),
    ("d.jsonl", jl(OK, {"id": 2, "q": {"an": "object"}}), 2, "field 'q' is an object"),
    ("d.jsonl", jl(OK, {"id": 2, "q": None}), 2, "field 'q' is null"),
    ("d.jsonl", jl(OK, {"id": 2, "q": True}), 2, "field 'q' is a boolean"),
    ("d.jsonl", jl(OK, {"id": 2, "q": ""}), 2, "the input is empty"),
    ("d.jsonl", jl(OK, {"id": 2, "q": " \n\t"}), 2, "the input is empty"),
    ("d.jsonl", jl(OK, {"id": 2, "q": "x", "a": ["yes"]}), 2, "label field 'a' is a list"),
    ("d.jsonl", jl(OK, {"id": 2, "q": "x", "a": {"v": 1}}), 2, "label field 'a' is an object"),
    ("d.jsonl", jl(OK, {"id": [2], "q": "x"}), 2, "id field 'id' is a list"),
    ("d.jsonl", jl(OK, {"id": None, "q": "x"}), 2, "id field 'id' is null"),
    ("d.jsonl", jl(OK, {"id": " ", "q": "x"}), 2, "id field 'id' is empty"),
    ("d.jsonl", jl(OK, {"id": "1", "q": "x"}), 2, "duplicate id '1'"),
    ("d.jsonl", jl(OK) + b'"just a string"\n', 2, "expected a JSON object per line, got a string"),
    ("d.jsonl", jl(OK) + b'{"id": 2, "q": "\\ud800 half a pair"}\n', 2, "lone UTF-16 surrogate"),
    (
        "d.jsonl",
        jl(OK) + b'{"id": 2, "q": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        2,
        "nested too deeply",
    ),
    (
        "d.jsonl",
        b"\n\n" + jl(OK) + b"\n" + jl({"id": 2}),
        5,
        "missing field 'q'",
    ),  # blank lines still count
    # a JSON list: the line of the item, not its position
    (
        "d.json",
        b'[\n  {"id": 1, "q": "a"},\n\n  {"id": 2, "q": 5, "a": "maybe"}\n]\n',
        4,
        "label 'maybe' is not one of",
    ),
    (
        "d.json",
        b'[\n  {"id": 1, "q": "a"},\n  {"id": 2,\n   "q": "b"},\n  {"id": 3}\n]',
        5,
        "missing field 'q'",
    ),
    ("d.json", b'[\n  {"id": 1, "q": "a"},\n  {"id": 2, "q": "b"', 3, "invalid JSON"),
    ("d.json", b'[\n  {"id": 1, "q": "a"},\n  {"id": 2, "q": "b"}\n', 4, "truncated"),
    ("d.json", b'[\n  {"id": 1, "q": "a"}\n]\n{"id": 2}\n', 4, "text after the end of the list"),
    (
        "d.json",
        b'[\n  {"id": 1, "q": "a"},\n  ["not", "an object"]\n]',
        3,
        "expected a list of JSON objects, got a list",
    ),
    ("d.json", b'[{"id": 1, "q": "a"},\n {"id": 1, "q": "b"}]', 2, "duplicate id '1'"),
    # CSV: quoted newlines do not shift the line numbers
    (
        "d.csv",
        b'id,q,a\n1,"two\nlines",yes\n2,"three\nmore\nlines",no\n3,x,maybe\n',
        7,
        "label 'maybe'",
    ),
    ("d.csv", b'id,q,a\n1,"two\nlines",yes\n2,x,no,extra\n', 4, "more values than header columns"),
    ("d.csv", b'id,q,a\n1,ok,yes\n2,"never closed,no\n3,x,yes\n', 3, "malformed CSV"),
    ("d.csv", b'id,q,a\n1,"x"y,yes\n', 2, "malformed CSV"),
    ("d.csv", b"id,q,q\n1,a,b\n", 1, "duplicate column(s) ['q']"),
    ("d.csv", b'id,q,a\n1,ok,yes\n2,"multi\nline \xff",no\n', 4, "not valid UTF-8"),
    ("d.csv", b'id,q,a\n1,"a",yes\n1,"b",no\n', 3, "duplicate id '1'"),
    ("d.csv", b"id,q,a\n1,,yes\n", 2, "the input is empty"),
    ("d.csv", b"", 1, "empty CSV file"),
]


@pytest.mark.parametrize(
    "name, content, line, problem",
    BAD_FILES,
    ids=[f"{i}-{case[3][:24]}" for i, case in enumerate(BAD_FILES)],
)
def test_bad_file_names_file_line_and_problem_and_annotate_writes_nothing(
    tmp_path, name, content, line, problem
):
    from teacher_helpers import ScriptedTeacher

    task = write_task(tmp_path, name, content)
    with pytest.raises(DataError) as caught:
        load_splits(load_task(task))
    message = str(caught.value)
    assert f"{name}:{line}: " in message and problem in message, message
    teacher = ScriptedTeacher()
    with pytest.raises(DataError):
        annotate(str(task), teacher, tmp_path / "out", quiet=True)
    assert not teacher.asked and not (tmp_path / "out").exists()  # nothing asked, nothing written


def test_bad_file_figures():
    kinds = {name.rsplit(".", 1)[1] for name, *_ in BAD_FILES}
    assert kinds == {"jsonl", "json", "csv"} and len(BAD_FILES) >= 30
    print(
        f"\nhostile input files: {len(BAD_FILES)} cases ({', '.join(sorted(kinds))}), each an error naming file:line"
    )


@pytest.mark.parametrize(
    "name, content",
    [
        ("bom.jsonl", b"\xef\xbb\xbf" + jl(OK, {"id": 2, "q": "b", "a": "no"})),
        (
            "bom.json",
            b"\xef\xbb\xbf["
            + json.dumps(OK).encode()
            + b", "
            + json.dumps({"id": 2, "q": "b", "a": "no"}).encode()
            + b"]",
        ),
        ("bom.csv", b"\xef\xbb\xbfid,q,a\r\n1,Is it?,yes\r\n2,b,no\r\n"),
        (
            "extra.jsonl",
            jl({**OK, "unused": [1, {"x": None}], "also": None}, {"id": 2, "q": "b", "a": "no"}),
        ),
        ("numbers.jsonl", jl({"id": 1, "q": "Is it?", "a": "yes"}, {"id": 2, "q": 3.5, "a": "no"})),
        ("unlabeled.jsonl", jl({"id": 1, "q": "Is it?", "a": "yes"}, {"id": 2, "q": "b", "a": ""})),
    ],
)
def test_tolerated_files(tmp_path, name, content):
    """A byte-order mark is dropped, CRLF is fine, unused fields are ignored, numbers
    are text, an empty label means unlabeled."""
    splits = load_splits(load_task(write_task(tmp_path, name, content)))
    examples = splits["train"]
    assert [e.id for e in examples] == ["1", "2"]
    assert examples[0].input == "Is it?" and examples[0].label == "yes"
    assert examples[1].label in ("no", None) and examples[1].input in ("b", "3.5")


@pytest.mark.parametrize("name", ["big.jsonl", "big.csv", "big.json"])
def test_one_megabyte_inputs_are_read_whole_and_fast(tmp_path, name):
    text = ("word " * (MB // 5)).strip() + '\nand a second line, with "quotes", commas'
    rows = [{"id": 1, "q": text, "a": "yes"}, {"id": 2, "q": "short", "a": "no"}]
    if name.endswith(".csv"):
        quoted = text.replace('"', '""')
        content = f'id,q,a\n1,"{quoted}",yes\n2,short,no\n'.encode()
    elif name.endswith(".json"):
        content = json.dumps(rows, indent=1).encode()
    else:
        content = jl(*rows)
    task = write_task(tmp_path, name, content)
    started = time.perf_counter()
    examples = load_splits(load_task(task))["train"]
    seconds = time.perf_counter() - started
    assert examples[0].input == text and examples[1].input == "short"
    assert seconds < 2.0
    print(f"\n1 MB input ({name}): read in {seconds * 1000:.0f} ms")


def test_csv_line_numbers_are_physical_lines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('id,q\n1,"a\nb"\n\n2,"c\r\nd\re"\n3,f\n', newline="")
    assert [(line, row["id"]) for line, row in read_records(path)] == [(2, "1"), (5, "2"), (8, "3")]
    json_list = tmp_path / "d.json"
    json_list.write_text('[{"id": 1},\n\n {"id": 2,\n  "x": "y"}, {"id": 3}\n]')
    assert [line for line, _ in read_records(json_list)] == [1, 3, 4]


# ---------------------------------------------------------------- predict: no partial output


@pytest.fixture(scope="module")
def run(tiny_causal, tmp_path_factory):
    from tiny_run import make_run

    return make_run(tiny_causal, tmp_path_factory.mktemp("inputs") / "run")


GOOD = [{"id": f"r{i}", "premise": f"p {i}", "hypothesis": f"h {i}"} for i in range(40)]


@pytest.mark.parametrize(
    "tail, problem",
    [
        (b'{"id": "r40", "premise": "p"}\n', "missing field 'hypothesis'"),
        (b'{"id": "r3", "premise": "p", "hypothesis": "h"}\n', "duplicate id 'r3'"),
        (b'{"id": "r40", "premise": ["p"], "hypothesis": "h"}\n', "field 'premise' is a list"),
        (b'{"id": "r40", "premise": "\xff", "hypothesis": "h"}\n', "not valid UTF-8"),
        (b'{"id": "r40", "premise": "p", "hypo', "truncated"),
    ],
)
def test_predict_on_a_file_bad_at_its_last_line_writes_nothing(run, tmp_path, tail, problem):
    from stepdistill.predict import predict

    source = tmp_path / "in.jsonl"
    source.write_bytes(jl(*GOOD) + tail)
    out = tmp_path / "out" / "preds.jsonl"
    with pytest.raises(DataError, match=f"in.jsonl:41: .*{problem}"):
        predict(
            run, source, out, chunk_size=2, progress=False
        )  # 20 chunks would fit before line 41
    assert not out.exists() and not out.parent.exists()


# ---------------------------------------------------------------- custom task files

TASK_OK = "name: t\nfiles: {train: d.jsonl}\ninput_fields: [q]\n"


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            "name: t\nfiles: {train: 5}\n",
            "field 'files' must be a mapping of split name to file path",
        ),
        ("name: t\nfiles: d.jsonl\n", "field 'files'"),
        (TASK_OK + "labels: yes\n", "field 'labels' must be a list"),
        (TASK_OK + "label_map: [a, b]\n", "field 'label_map'"),
        (
            TASK_OK + "max_label_tokens: many\n",
            "field 'max_label_tokens' must be a positive whole number",
        ),
        (TASK_OK + "max_label_tokens: 0\n", "field 'max_label_tokens'"),
        (TASK_OK + "input_template: 5\n", "field 'input_template' must be text"),
        (TASK_OK + "label_field: [a]\n", "field 'label_field' must be a field name"),
        (TASK_OK + "validation: {fraction: 2}\n", "field 'validation.fraction'"),
        (TASK_OK + "validation: {from: test}\n", "validation.from names split 'test'"),
        (TASK_OK + "validation: {size: -1}\n", "field 'validation.size'"),
        (TASK_OK + "validation: {fracton: 0.1}\n", "unknown validation field(s) ['fracton']"),
        (TASK_OK + "validation: 0.1\n", "field 'validation' must be a mapping"),
        (TASK_OK + "parser: {cutat: []}\n", "unknown parser field(s) ['cutat']"),
        (TASK_OK + "parser: only text\n", "field 'parser'"),
        (TASK_OK + "demonstrations: [{input: a}]\n", "field 'demonstrations'"),
        (TASK_OK + "teacher_outputs: {train: out.json}\n", "field 'teacher_outputs'"),
        ("name: [t]\nfiles: {train: d.jsonl}\n", "field 'name' must be text"),
        ("- name: t\n", "a task file must be a mapping"),
        ("name: t\nfiles: {train: d.jsonl\n", "not valid YAML"),
        ("name: t\n\tfiles: x\n", "not valid YAML"),
    ],
)
def test_bad_task_files_name_the_file_and_field(tmp_path, text, problem):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TaskError) as caught:
        load_task(path)
    assert "t.yaml" in str(caught.value) and problem in str(caught.value), str(caught.value)


def test_bad_task_file_through_the_cli_is_one_clear_line(tmp_path, capsys):
    from stepdistill.cli import main

    (tmp_path / "t.yaml").write_text("name: t\nfiles: {train: 5}\n")
    assert (
        main(["annotate", "--task", str(tmp_path / "t.yaml"), "--output", str(tmp_path / "out")])
        == 2
    )
    err = capsys.readouterr().err
    assert "t.yaml: field 'files'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- response store files


def test_store_file_that_is_not_a_store_is_refused_clearly(tmp_path):
    from stepdistill.teachers.store import Store, StoreError

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database " * 100)
    with pytest.raises(StoreError, match="garbage.sqlite: not a readable response store"):
        Store(garbage)
    assert garbage.read_bytes() == b"not a database " * 100  # left as it was
    foreign = tmp_path / "other-app.sqlite"
    with closing(sqlite3.connect(foreign)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
    with pytest.raises(StoreError, match="other tables \\(users\\), not a response store"):
        Store(foreign)
    with closing(sqlite3.connect(foreign)) as db:  # nothing was added to it
        assert [
            r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ] == ["users"]


def test_version_1_store_keeps_its_answers_through_the_migration(tmp_path):
    from teacher_helpers import ScriptedTeacher, make_toy_task

    from stepdistill.annotate import make_requests
    from stepdistill.teachers.store import (
        MIGRATIONS,
        SCHEMA_VERSION,
        CachingTeacher,
        Store,
        canonical,
        prompt_sha,
    )

    task = load_task(make_toy_task(tmp_path, count=3))
    requests = make_requests(task, load_splits(task)["train"])
    teacher = ScriptedTeacher()
    caching = CachingTeacher(teacher, Store(tmp_path / "scratch.sqlite"))
    path = tmp_path / "v1.sqlite"
    with closing(sqlite3.connect(path)) as db:  # a store as version 1 wrote it
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in MIGRATIONS[1]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (1)")
        for request in requests:
            db.execute(
                "INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    caching.key(request),
                    prompt_sha(request.prompt),
                    canonical(teacher.identity),
                    "scripted",
                    request.prompt,
                    0,
                    f"stored answer {request.example.id}",
                    5,
                    7,
                    0.0,
                ),
            )
        db.commit()
    caching.store.close()
    with Store(path) as store:
        assert store.version == SCHEMA_VERSION
        answers = list(CachingTeacher(teacher, store).complete(requests))
    assert [a.text for a in answers] == [f"stored answer {r.example.id}" for r in requests]
    assert all(a.cached for a in answers) and not teacher.asked
