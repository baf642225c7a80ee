"""The response store: every teacher answer in SQLite, so a run resumes and replays.

``CachingTeacher`` wraps any backend (lm-eval-harness's CachingLM): a request whose key
is stored is answered from the store; every other answer is committed the moment it
arrives, so a run killed with ``kill -9`` loses at most the requests then in flight.
The key is the sha256 of the canonical request (the backend's identity - model and
generation parameters - the prompt and the sample index). API keys and endpoints are
never part of it, so the same model behind another URL reuses the cache, and nothing
secret is ever written.

``StoreTeacher`` (backend ``store``) replays a store as a teacher, and ``export`` writes
the rationale JSONL that ``annotate`` writes.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..annotations import rationale_row
from ..data import Example
from ..io import write_jsonl
from ..tasks import Task
from . import Completion, Request, Teacher

SCHEMA_VERSION = 2

# Forward-only migrations: MIGRATIONS[v] takes a store from version v - 1 to v.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE responses (
            key TEXT PRIMARY KEY,         -- sha256 of the canonical request
            prompt_sha TEXT NOT NULL,     -- sha256 of the prompt alone (replay by prompt)
            identity TEXT NOT NULL,       -- the backend's canonical identity (JSON)
            model TEXT,
            prompt TEXT NOT NULL,
            sample INTEGER NOT NULL,
            text TEXT NOT NULL,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            created REAL NOT NULL
        )""",
        "CREATE INDEX responses_prompt ON responses (prompt_sha, sample)",
    ],
    2: [
        # Which example asked which request: export rebuilds the rationale dataset
        # from it. Two examples with the same prompt share one response.
        """CREATE TABLE requests (
            key TEXT NOT NULL,
            example_id TEXT NOT NULL,
            split TEXT NOT NULL,
            sample INTEGER NOT NULL,
            example TEXT NOT NULL,        -- id, split, input, label, choices (JSON)
            PRIMARY KEY (split, example_id, sample, key)
        )""",
        # Failed attempts are kept for the account, never served as answers.
        """CREATE TABLE failures (
            key TEXT NOT NULL,
            example_id TEXT,
            error TEXT NOT NULL,
            created REAL NOT NULL
        )""",
    ],
}


class StoreError(ValueError):
    """The store file is unusable (written by a newer version, or corrupt)."""


def canonical(value: Any) -> str:
    """Sorted, compact JSON: equal requests give equal text, hence equal keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(identity: dict[str, Any], prompt: str, sample: int) -> str:
    """sha256 of the canonical request. ``identity`` must hold no secret or endpoint."""
    return hashlib.sha256(
        canonical({"identity": identity, "prompt": prompt, "sample": sample}).encode()
    ).hexdigest()


def prompt_sha(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


class Store:
    """A SQLite file of teacher responses (WAL mode: readers never block the writer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: backends may hand completions over from a worker
        # thread; all writes still happen on the one consuming thread.
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a killed process (not a power cut): the
            # right trade for a cache whose worst loss is a re-asked request.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as error:
            self.db.close()
            raise StoreError(
                f"{self.path}: not a readable response store ({error}); move it away or use another --store"
            ) from None
        except StoreError:
            self.db.close()
            raise

    def _migrate(self) -> None:
        tables = {
            row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if tables and "schema_version" not in tables:
            raise StoreError(
                f"{self.path}: an SQLite file with other tables ({', '.join(sorted(tables))}), not a response store"
            )
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.db.execute("SELECT version FROM schema_version").fetchone()
        version = row[0] if row else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: store schema version {version} is newer than this stepdistill "
                f"understands ({SCHEMA_VERSION}); upgrade stepdistill or use another store"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self.db:  # one transaction per step: a crash leaves a whole version
                for statement in MIGRATIONS[target]:
                    self.db.execute(statement)
                self.db.execute("DELETE FROM schema_version")
                self.db.execute("INSERT INTO schema_version (version) VALUES (?)", (target,))

    @property
    def version(self) -> int:
        return int(self.db.execute("SELECT version FROM schema_version").fetchone()[0])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def get(self, key: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM responses WHERE key = ?", (key,)).fetchone()

    def has(self, key: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None
        )

    def find(self, prompt: str, sample: int, model: str | None = None) -> sqlite3.Row | None:
        """The newest response to this prompt and sample (any identity, or one model)."""
        query = "SELECT * FROM responses WHERE prompt_sha = ? AND sample = ?"
        args: list[Any] = [prompt_sha(prompt), sample]
        if model is not None:
            query += " AND model = ?"
            args.append(model)
        return self.db.execute(query + " ORDER BY created DESC LIMIT 1", args).fetchone()

    def put(self, key: str, identity: dict[str, Any], completion: Completion) -> None:
        """Store one answer and the example that asked it; committed before returning."""
        request = completion.request
        usage = completion.usage
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    prompt_sha(request.prompt),
                    canonical(identity),
                    identity.get("model"),
                    request.prompt,
                    request.sample,
                    completion.text,
                    usage.get("prompt_tokens"),
                    usage.get("completion_tokens"),
                    time.time(),
                ),
            )
            self._link(key, request)

    def link(self, key: str, request: Request) -> None:
        """Record that this example asked this (already stored) request."""
        with self.db:
            self._link(key, request)

    def _link(self, key: str, request: Request) -> None:
        example = request.example
        self.db.execute(
            "INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?)",
            (key, example.id, example.split, request.sample, canonical(example_summary(example))),
        )

    def fail(self, key: str, completion: Completion) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO failures VALUES (?, ?, ?, ?)",
                (key, completion.request.example.id, completion.error or "unknown", time.time()),
            )

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def usage(self) -> dict[str, int]:
        """Tokens of every stored response (what the store has cost so far)."""
        row = self.db.execute(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0) FROM responses"
        ).fetchone()
        return {"prompt_tokens": int(row[0]), "completion_tokens": int(row[1])}

    def linked_rows(self, model: str | None = None) -> Iterator[sqlite3.Row]:
        """(example, response) pairs in split, example and sample order."""
        query = (
            "SELECT requests.example AS example, requests.sample AS sample, responses.text AS text, "
            "responses.model AS model FROM requests JOIN responses ON requests.key = responses.key"
        )
        args: list[Any] = []
        if model is not None:
            query += " WHERE responses.model = ?"
            args.append(model)
        yield from self.db.execute(query + " ORDER BY requests.split, requests.rowid", args)


def example_summary(example: Any) -> dict[str, Any]:
    """What export needs to rebuild a rationale row without the data files."""
    return {
        "id": example.id,
        "split": example.split,
        "input": example.input,
        "label": example.label,
        "source_split": example.source_split,
        "source_index": example.source_index,
        "record": example.record,
    }


def backend_identity(backend: Teacher) -> dict[str, Any]:
    """The backend's identity, or its name when it declares none."""
    return dict(backend.identity) if backend.identity else {"backend": backend.name}


class CachingTeacher(Teacher):
    """Wraps any teacher: stored requests are answered from the store, new answers are
    committed one by one as they arrive. Failed requests are recorded (for the account)
    and asked again on the next run."""

    def __init__(self, backend: Teacher, store: Store):
        self.backend = backend
        self.store = store
        self.name = backend.name
        self.temperature = backend.temperature
        self.max_tokens = backend.max_tokens
        self.batch = backend.batch
        self.identity = backend_identity(backend)
        self.hits = 0
        """Requests answered from the store."""
        self.misses = 0
        """Requests that reached the backend and came back (answered or failed): after a
        budget stop, those never started are not counted."""
        self.handed = 0
        """Requests not in the store, handed to the backend (some may never start)."""
        self.late: list[Completion] = []
        """Answers that arrived after the consumer stopped (stored, not yielded)."""

    @property
    def retries(self) -> int | None:  # type: ignore[override]
        return self.backend.retries

    @property  # type: ignore[override]
    def budget(self) -> Any:
        return self.backend.budget

    @budget.setter
    def budget(self, value: Any) -> None:
        self.backend.budget = value

    @property  # type: ignore[override]
    def folder(self) -> Path | None:
        return self.backend.folder

    @folder.setter
    def folder(self, value: Path | None) -> None:
        self.backend.folder = value

    @property  # type: ignore[override]
    def quiet(self) -> bool:
        return self.backend.quiet

    @quiet.setter
    def quiet(self, value: bool) -> None:
        self.backend.quiet = value

    def tokenizer(self) -> Any:
        return self.backend.tokenizer()

    def take_late(self) -> list[Completion]:
        late, self.late = self.late, []
        return late

    def key(self, request: Request) -> str:
        return request_key(self.identity, request.prompt, request.sample)

    def account(self) -> dict[str, Any]:
        return self.backend.account()

    def submit(self, requests: Sequence[Request]) -> None:
        """Hand the backend what is not stored yet, each distinct request once."""
        waiting: dict[str, Request] = {}
        for request in requests:
            key = self.key(request)
            if key not in waiting and not self.store.has(key):
                waiting[key] = request
        if waiting:
            self.backend.submit(list(waiting.values()))

    def complete(self, requests: Sequence[Request]) -> Iterator[Completion]:
        keys = {id(request): self.key(request) for request in requests}
        missing: list[Request] = []
        for request in requests:
            row = self.store.get(keys[id(request)])
            if row is None:
                missing.append(request)
                continue
            self.hits += 1
            self.store.link(keys[id(request)], request)
            usage = {
                "prompt_tokens": row["prompt_tokens"] or 0,
                "completion_tokens": row["completion_tokens"] or 0,
            }
            yield Completion(request, row["text"], usage=usage, cached=True)
        self.handed += len(missing)
        if not missing:
            return
        # Identical requests (two examples with the same input) are asked once; the
        # answer goes to each of them.
        waiting: dict[str, list[Request]] = {}
        for request in missing:
            waiting.setdefault(keys[id(request)], []).append(request)
        answers = self.backend.complete([group[0] for group in waiting.values()])

        def keep(completion: Completion) -> Iterator[Completion]:
            key = keys[id(completion.request)]
            self.misses += 1
            if completion.error is None and completion.text is not None:
                self.store.put(key, self.identity, completion)
            else:
                self.store.fail(key, completion)
            yield completion
            for twin in waiting[key][1:]:
                if completion.error is None:
                    self.store.link(key, twin)
                yield replace(completion, request=twin, usage={}, cached=True)

        try:
            for completion in answers:
                yield from keep(completion)
        except GeneratorExit:
            # The consumer stopped early (a budget reached): answers already on their
            # way are paid for, so wait for them and store them. They are kept in
            # ``late`` for the caller's account.
            finish = getattr(answers, "finish", None)
            if finish is not None:
                for completion in finish():
                    self.late.extend(keep(completion))
            raise
        finally:
            # A consumer that stops early (a budget reached) stops the backend too.
            close = getattr(answers, "close", None)
            if close is not None:
                close()


class StoreTeacher(Teacher):
    stored = True

    """Backend ``store``: answers each request with the stored response to the same
    prompt and sample (any model, or ``model=``); an error where none is stored."""

    def __init__(self, task: Task, path: str | Path, model: str | None = None):
        self.name = "store"
        self.task = task
        self.model = model
        self.store = Store(path)

    def complete(self, requests: Sequence[Request]) -> Iterator[Completion]:
        for request in requests:
            row = self.store.find(request.prompt, request.sample, self.model)
            if row is None:
                yield Completion(
                    request, None, error="missing: no stored response for this prompt and sample"
                )
            else:
                usage = {
                    "prompt_tokens": row["prompt_tokens"] or 0,
                    "completion_tokens": row["completion_tokens"] or 0,
                }
                yield Completion(request, row["text"], usage=usage, cached=True)


def export(
    store_path: str | Path, task: Task, output: str | Path, model: str | None = None
) -> dict[str, int]:
    """Write the rationale JSONL (one file per split) of every stored answer; returns
    rows per split."""
    by_split: dict[str, list[dict[str, Any]]] = {}
    with Store(store_path) as store:
        samples = {row["sample"] for row in store.linked_rows(model)}
        for row in store.linked_rows(model):
            example = Example(**json.loads(row["example"]))
            completion = Completion(Request(example, "", row["sample"]), row["text"])
            by_split.setdefault(example.split, []).append(
                rationale_row(task, completion, with_sample=len(samples) > 1)
            )
    for split, rows in by_split.items():
        write_jsonl(Path(output) / f"{split}.jsonl", rows)
    return {split: len(rows) for split, rows in by_split.items()}
