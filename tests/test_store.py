"""The response store: keys, migrations, the caching wrapper, export and replay."""

from __future__ import annotations

import sqlite3

import pytest
from teacher_helpers import ScriptedTeacher, make_toy_task

from stepdistill.annotate import annotate, make_requests
from stepdistill.data import load_splits
from stepdistill.io import read_jsonl
from stepdistill.tasks import load_task
from stepdistill.teachers import load_teacher
from stepdistill.teachers.store import (
    SCHEMA_VERSION,
    CachingTeacher,
    Store,
    StoreError,
    export,
    request_key,
)


def test_key_is_canonical_and_leaves_secrets_and_endpoints_out():
    identity = {"model": "m", "temperature": 0.0, "stop": ["\n\nQ:"]}
    key = request_key(identity, "Q: hi\nA:", 0)
    assert key == request_key(dict(reversed(list(identity.items()))), "Q: hi\nA:", 0)  # order-free
    assert key != request_key(identity, "Q: hi\nA:", 1)  # the sample index counts
    assert key != request_key({**identity, "temperature": 0.7}, "Q: hi\nA:", 0)
    assert len(key) == 64


def test_openai_identity_has_no_key_or_base_url(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-xyz")
    task = load_task(make_toy_task(tmp_path))
    teacher = load_teacher("openai", task, model="gpt-x", base_url="http://10.0.0.1:9/v1")
    text = repr(teacher.identity)
    assert "sk-secret-xyz" not in text and "10.0.0.1" not in text


def test_store_is_wal_and_versioned(tmp_path):
    path = tmp_path / "store.sqlite"
    with Store(path) as store:
        assert store.version == SCHEMA_VERSION
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Store(path) as store:  # reopening migrates nothing and keeps the version
        assert store.version == SCHEMA_VERSION
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_migrates_a_version_1_store_forward(tmp_path):
    from stepdistill.teachers.store import MIGRATIONS

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in MIGRATIONS[1]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES (1)")
    db.close()
    with Store(path) as store:
        assert store.version == SCHEMA_VERSION
        store.db.execute("SELECT * FROM requests").fetchall()  # the version-2 table exists


def test_caching_wrapper_asks_each_request_once(tmp_path):
    task = load_task(make_toy_task(tmp_path, count=6))
    examples = load_splits(task)["train"]
    requests = make_requests(task, examples)
    teacher = ScriptedTeacher()
    with Store(tmp_path / "s.sqlite") as store:
        first = list(CachingTeacher(teacher, store).complete(requests))
        second = list(CachingTeacher(teacher, store).complete(requests))
    assert [c.text for c in first] == [c.text for c in second]
    assert all(count == 1 for count in teacher.asked.values()) and len(teacher.asked) == len(
        requests
    )
    assert all(c.cached for c in second) and not any(c.cached for c in first)


def test_export_and_store_replay_match_annotate(tmp_path):
    task_path = make_toy_task(tmp_path, count=8)
    out = tmp_path / "out"
    summary = annotate(
        str(task_path),
        ScriptedTeacher(),
        out,
        splits=("train", "valid"),
        quiet=True,
        store=out / "store.sqlite",
    )
    assert summary["store"]["asked"] == 8
    written = read_jsonl(out / "train.jsonl")
    counts = export(out / "store.sqlite", load_task(task_path), tmp_path / "exported")
    assert counts["train"] == len(written)
    assert read_jsonl(tmp_path / "exported" / "train.jsonl") == written
    # The store as a teacher: same rows again, nothing asked of any model.
    replayed = annotate(
        str(task_path),
        "store",
        tmp_path / "replayed",
        splits=("train",),
        quiet=True,
        teacher_options={"path": str(out / "store.sqlite")},
    )
    assert read_jsonl(tmp_path / "replayed" / "train.jsonl") == written
    assert replayed["splits"]["train"]["parsed"] == len(written)


def test_identical_requests_are_asked_once(tmp_path):
    task = load_task(make_toy_task(tmp_path, count=3))
    examples = load_splits(task)["train"]
    twin = examples[0].__class__(**{**examples[0].__dict__, "id": "twin", "source_index": 99})
    requests = make_requests(task, [*examples, twin])
    teacher = ScriptedTeacher()
    with Store(tmp_path / "s.sqlite") as store:
        answers = {
            c.request.example.id: c.text for c in CachingTeacher(teacher, store).complete(requests)
        }
        linked = store.db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    assert answers["twin"] == answers[examples[0].id] and len(answers) == 4
    assert sum(teacher.asked.values()) == 3 and linked == 4
