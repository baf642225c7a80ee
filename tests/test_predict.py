"""Batch predict through the real CLI: JSONL / CSV in, JSONL out, resumable."""

from __future__ import annotations

import json

import pytest
from tiny_run import make_run

from stepdistill.cli import main
from stepdistill.predict import existing_ids
from stepdistill.student import Student

RECORDS = [
    {"id": f"r{i}", "premise": f"premise {i}", "hypothesis": f"hypothesis {i * 7}"}
    for i in range(7)
]


@pytest.fixture(scope="module")
def run(tiny_causal, tmp_path_factory):
    return make_run(tiny_causal, tmp_path_factory.mktemp("predict") / "run")


@pytest.fixture(scope="module")
def expected(run):
    return [p.as_dict() for p in Student.load(run).predict(RECORDS, rationale=True)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_writes_one_row_per_record(run, expected, tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "out" / "preds.jsonl"
    assert (
        main(
            [
                "predict",
                str(run),
                "--input",
                str(source),
                "--output",
                str(out),
                "--rationale",
                "--chunk-size",
                "3",
            ]
        )
        == 0
    )
    rows = read_rows(out)
    assert [row["id"] for row in rows] == [r["id"] for r in RECORDS]
    assert [(row["prediction"], row["raw"], row["rationale"]) for row in rows] == [
        (e["label"], e["raw"], e["rationale"]) for e in expected
    ]


def test_resume_skips_done_ids_and_repairs_a_torn_line(run, expected, tmp_path, capsys):
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    out = tmp_path / "preds.jsonl"
    assert (
        main(
            [
                "predict",
                str(run),
                "--input",
                str(source),
                "--output",
                str(out),
                "--limit",
                "3",
                "--chunk-size",
                "2",
            ]
        )
        == 0
    )
    assert [row["id"] for row in read_rows(out)] == ["r0", "r1", "r2"]
    with out.open("a") as handle:
        handle.write('{"id": "r3", "predic')  # a crash mid-line
    capsys.readouterr()
    assert main(["predict", str(run), "--input", str(source), "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["skipped"] == 3 and summary["predicted"] == 4
    rows = read_rows(out)
    assert [row["id"] for row in rows] == [r["id"] for r in RECORDS]
    assert [row["raw"] for row in rows] == [e["raw"] for e in expected]
    assert main(["predict", str(run), "--input", str(source), "--output", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["predicted"] == 0


def test_csv_without_ids_uses_row_positions(run, expected, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(
        "premise,hypothesis\n"
        + "".join(f'"{r["premise"]}","{r["hypothesis"]}"\n' for r in RECORDS[:4])
    )
    out = tmp_path / "preds.jsonl"
    assert main(["predict", str(run), "--input", str(source), "--output", str(out)]) == 0
    rows = read_rows(out)
    assert [row["id"] for row in rows] == ["0", "1", "2", "3"]
    assert [row["raw"] for row in rows] == [e["raw"] for e in expected[:4]]
    assert "rationale" not in rows[0]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            '{"id": "a", "premise": "p", "hypothesis": "h"}\n{"id": "a", "premise": "p", "hypothesis": "h"}\n',
            "in.jsonl:2: duplicate id 'a'",
        ),
        ('{"id": "a", "premise": "p"}\n', "in.jsonl:1: missing field 'hypothesis'"),
        ('{"id": "a", "premise": "p", "hypothesis": "h"}\n{oops\n', "in.jsonl:2: invalid JSON"),
    ],
)
def test_bad_input_is_reported_with_file_and_line(run, tmp_path, capsys, content, message):
    source = tmp_path / "in.jsonl"
    source.write_text(content)
    assert (
        main(["predict", str(run), "--input", str(source), "--output", str(tmp_path / "o.jsonl")])
        == 2
    )
    assert message in capsys.readouterr().err


def test_existing_ids_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "o.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="o.jsonl:2: not a prediction row"):
        existing_ids(path)
    path.write_text('{"id": "a"}\n{"id": "b"')
    assert existing_ids(path) == {"a"} and path.read_text() == '{"id": "a"}\n'
