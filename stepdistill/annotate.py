"""Teacher stage: ask a teacher for a rationale and a label for every example.

Writes the rationale dataset (one JSONL per split: id, input, gold label, teacher
label, rationale, parse status, raw text; ``sample`` when several are drawn) and a
summary with counts, parse failures, request failures with their reasons, tokens,
cost and the teacher's accuracy against gold.

Live teachers are wrapped in the response store (``<output>/store.sqlite``): every
answer is committed as it arrives, and rerunning the same command asks only what is
not stored yet - after a crash, a ``kill -9`` or a budget stop alike.

From the command line::

    stepdistill annotate --task svamp --teacher openai --model gpt-4o-mini --estimate
    stepdistill annotate --task svamp --teacher openai --model gpt-4o-mini --max-cost 2
    stepdistill annotate --task my_task.yaml --teacher openai --base-url http://127.0.0.1:8000/v1 \
        --model Qwen/Qwen2.5-7B-Instruct --concurrency 32 --samples 4 --temperature 0.7 --filter-correct
    stepdistill annotate --task svamp --teacher hf --model HuggingFaceTB/SmolLM2-1.7B-Instruct
    stepdistill annotate --task svamp --teacher store --option path=annotations/svamp-openai/store.sqlite
    stepdistill annotate --task svamp --teacher openai-batch --model gpt-4o-mini --retry-failed
    stepdistill annotate --task svamp --teacher replay --option batch_output=batch_output.jsonl
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .annotations import default_folder, rationale_row
from .cost import Budget, batch_prices, count_tokens, load_prices, price_of
from .data import Example, load_splits
from .io import write_json, write_jsonl
from .parse import OK
from .prompts import build_prompt, render_answer
from .tasks import Task, load_task
from .teachers import Request, Teacher, load_teacher, teacher_label
from .teachers.store import CachingTeacher, Store


def annotate(
    task: str | Task,
    teacher: str | Teacher = "replay",
    output: str | Path | None = None,
    splits: tuple[str, ...] = ("train", "valid", "test"),
    data: str | Path | None = None,
    limit: int | None = None,
    quiet: bool = False,
    *,
    teacher_options: dict[str, Any] | None = None,
    samples: int = 1,
    filter_correct: bool = False,
    estimate: bool = False,
    max_cost: float | None = None,
    max_tokens: int | None = None,
    prices: str | Path | dict[str, dict[str, float]] | None = None,
    store: str | Path | bool | None = None,
) -> dict[str, Any]:
    """Annotate a task's splits with a teacher; returns the summary (also written to disk).

    ``teacher`` is a backend name or alias (options in ``teacher_options``) or a teacher
    object. ``samples`` rationales are drawn per example (use a temperature above 0).
    ``filter_correct`` keeps only rows whose teacher label agrees with the gold label
    (rows without gold are kept). ``estimate`` returns expected tokens and cost of what
    is not stored yet, asking nothing. ``max_cost`` (USD) and ``max_tokens`` stop the run
    cleanly once reached. ``store``: a path, ``False`` for none, or ``None`` for
    ``<output>/store.sqlite`` on live backends.
    """
    task = task if isinstance(task, Task) else load_task(task)
    teacher_name = teacher_label(teacher, task) if isinstance(teacher, str) else teacher.name
    output = Path(output) if output else default_folder(task, teacher_name)
    backend = (
        teacher
        if not isinstance(teacher, str)
        else load_teacher(teacher, task, data=data, **(teacher_options or {}))
    )
    if samples < 1:
        raise ValueError("samples must be at least 1")
    if samples > 1 and backend.temperature == 0.0:
        raise ValueError(
            "several samples per example need a temperature above 0 (they would all be the same)"
        )
    examples = load_splits(task, data)
    chosen = {
        split: (examples[split][:limit] if limit else examples[split])
        for split in splits
        if split in examples
    }
    requests = {split: make_requests(task, rows, samples) for split, rows in chosen.items()}

    cache: Store | None = None
    if store is not False and (store is not None or not backend.stored):
        cache = Store(Path(store) if isinstance(store, str | Path) else output / "store.sqlite")
        backend = CachingTeacher(backend, cache)
    # A backend may keep state of its own beside the store (a batch's id).
    backend.folder = cache.path.parent if cache is not None else output
    backend.quiet = quiet
    price_table = prices if isinstance(prices, dict) else load_prices(prices)
    # A batch backend is priced at batch prices; what it retries on the normal API
    # (reserved "live") at the normal ones.
    live_prices = price_table if backend.batch else None
    price_table = batch_prices(price_table) if backend.batch else price_table
    model = (backend.identity or {}).get("model")
    try:
        if estimate:
            return estimate_cost(task, backend, requests, price_table, model)
        budget = Budget(
            model, price_table, max_cost=max_cost, max_tokens=max_tokens, live_prices=live_prices
        )
        # A backend that runs requests concurrently counts those in flight against it.
        backend.budget = budget
        summary: dict[str, Any] = {
            "task": task.name,
            "teacher": teacher_name,
            "model": model,
            "samples": samples,
            **({"pricing": "batch"} if backend.batch else {}),
            "splits": {},
        }
        # A batch backend sends every split's requests in one batch now.
        backend.submit([r for split_requests in requests.values() for r in split_requests])
        for split, split_requests in requests.items():
            if budget.exhausted():
                break
            rows = annotate_requests(
                task,
                backend,
                split_requests,
                budget,
                desc=f"annotate {task.name}/{split}",
                quiet=quiet,
                with_sample=samples > 1,
            )
            split_summary = summarize(rows)
            if warning := parse_rate_warning(split, split_summary):
                summary.setdefault("warnings", []).append(warning)
                if not quiet:
                    print(f"warning: {warning}", file=sys.stderr)
            if filter_correct:
                kept = [
                    row for row in rows if row.get("gold_label") is None or row["teacher_correct"]
                ]
                split_summary["dropped_incorrect"] = len(rows) - len(kept)
                rows = kept
            split_summary["rows_written"] = len(rows)
            write_jsonl(output / f"{split}.jsonl", rows)
            summary["splits"][split] = split_summary
        summary["usage"] = budget.as_dict()
        retries = backend.retries
        if retries is not None:
            summary["retries"] = retries  # attempts repeated after a 429, 5xx, timeout ...
        if isinstance(backend, CachingTeacher):
            assert cache is not None
            spent = cache.usage()  # every answer in the store, this run's and earlier ones
            summary["store"] = {
                "path": str(cache.path),
                "answered_from_store": backend.hits,
                # Requests that reached the teacher; after a budget stop, those queued
                # but never started are "not_asked" (asked on the next run).
                "asked": backend.misses,
                "not_asked": backend.handed - backend.misses,
                "total_prompt_tokens": spent["prompt_tokens"],
                "total_completion_tokens": spent["completion_tokens"],
                "total_cost_usd": round(
                    price_of(
                        spent["prompt_tokens"], spent["completion_tokens"], model, price_table
                    ),
                    6,
                ),
            }
        if account := backend.account():
            summary["backend"] = account
        if budget.stopped:
            summary["stopped"] = budget.stopped
        write_json(output / "summary.json", summary)
        summary["output"] = str(output)
        return summary
    finally:
        if cache is not None:
            cache.close()


def make_requests(task: Task, examples: list[Example], samples: int = 1) -> list[Request]:
    """One request per example and sample, in the split's order."""
    requests: list[Request] = []
    for example in examples:
        prompt = build_prompt(task, example.input, example.record)
        requests.extend(Request(example, prompt, sample) for sample in range(samples))
    return requests


def annotate_requests(
    task: Task,
    backend: Teacher,
    requests: list[Request],
    budget: Budget | None = None,
    desc: str = "annotate",
    quiet: bool = False,
    with_sample: bool = False,
) -> list[dict[str, Any]]:
    """Ask every request (stopping early if the budget runs out); rows in request order."""
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    answers = backend.complete(requests)
    bar = tqdm(total=len(requests), desc=desc, disable=quiet, unit="req")
    try:
        for completion in answers:
            request = completion.request
            by_key[(request.example.id, request.sample)] = rationale_row(
                task, completion, with_sample
            )
            bar.update(1)
            if budget is not None and not completion.cached:
                budget.add(completion.usage, request)
                bar.set_postfix(tokens=budget.tokens, cost=f"${budget.cost:.4f}", refresh=False)
                if budget.exhausted():
                    break
    finally:
        bar.close()
        close = getattr(answers, "close", None)
        if close is not None:
            close()  # stops a backend still asking (everything answered is stored)
    # Answers that were in flight when the budget stopped the run: stored and paid
    # for, so they are counted and written too.
    for completion in backend.take_late():
        request = completion.request
        by_key[(request.example.id, request.sample)] = rationale_row(task, completion, with_sample)
        if budget is not None and not completion.cached:
            budget.add(completion.usage, request)
    # Keep the split's order whatever order the backend answered in.
    return [by_key[key] for key in ((r.example.id, r.sample) for r in requests) if key in by_key]


def annotate_examples(
    task: Task,
    backend: Teacher,
    examples: list[Example],
    desc: str = "annotate",
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """One rationale row per example (kept for callers of the first version)."""
    return annotate_requests(task, backend, make_requests(task, examples), desc=desc, quiet=quiet)


def failure_reason(error: str) -> str:
    """The kind of a request failure, without its message: ``retries exhausted: RateLimitError 429``,
    ``batch failed: status 500``."""
    parts = error.split(": ")
    two = parts[0] in ("retries exhausted", "batch failed") and len(parts) > 1
    return ": ".join(parts[:2]) if two else parts[0]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of parse outcomes, request failures and the teacher's accuracy against gold."""
    statuses = Counter(row["parse_status"] for row in rows)
    labelled = [row for row in rows if row.get("gold_label") is not None]
    summary: dict[str, Any] = {
        "examples": len({row["id"] for row in rows}),
        "rows": len(rows),
        "parsed": statuses.get(OK, 0),
        "parse_status": dict(statuses),
        "with_gold": len(labelled),
    }
    failures = Counter(failure_reason(row["error"]) for row in rows if row.get("error"))
    if failures:
        summary["failures"] = dict(failures)
        # Which rows (a rerun asks them again), the first FAILED_IDS_SHOWN of them.
        failed = [
            row["id"] + (f"#{row['sample']}" if "sample" in row else "")
            for row in rows
            if row.get("error")
        ]
        summary["failed_ids"] = failed[:FAILED_IDS_SHOWN]
    if labelled:
        correct = sum(bool(row["teacher_correct"]) for row in labelled)
        summary["teacher_correct"] = correct
        # Unparseable outputs count as wrong: they are what the teacher gave.
        summary["teacher_accuracy"] = correct / len(labelled)
    return summary


FAILED_IDS_SHOWN = 100
"""Most ids of failed rows a split's summary names."""

LOW_PARSE_RATE = 0.5
"""Below this share of parsed answers a split gets a warning: the task's parser most
likely does not match how this teacher ends its answers."""


def parse_rate_warning(split: str, summary: dict[str, Any]) -> str | None:
    """A warning when few of a split's answers parsed (None otherwise)."""
    rows, parsed = summary["rows"], summary["parsed"]
    if not rows or parsed / rows >= LOW_PARSE_RATE:
        return None
    statuses = ", ".join(f"{n} {status}" for status, n in summary["parse_status"].items())
    return (
        f"{split}: only {parsed} of {rows} teacher answers parsed ({100 * parsed / rows:.0f}%: "
        f"{statuses}); check the task's parser pattern (and teacher_output_field) against "
        "the raw answers in the rationale files"
    )


def estimate_cost(
    task: Task,
    backend: Teacher,
    requests: dict[str, list[Request]],
    prices: dict[str, dict[str, float]],
    model: str | None,
) -> dict[str, Any]:
    """Expected tokens and USD of the requests not stored yet; asks nothing.

    Prompt tokens are counted (the backend's tokenizer if it has one, else ~4
    characters a token); completion tokens are expected to be as long as the task's
    demonstration answers, and at most the backend's ``max_tokens``.
    """
    tokenizer = backend.tokenizer()
    answers = [
        render_answer(task, str(d["rationale"]), str(d["label"])) for d in task.demonstrations
    ]
    typical = (
        int(sum(count_tokens(a, tokenizer) for a in answers) / len(answers)) if answers else 64
    )
    ceiling = int(backend.max_tokens or typical)
    typical = min(typical, ceiling)
    result: dict[str, Any] = {
        "task": task.name,
        "model": model,
        "priced": (model or "") in prices,
        **({"pricing": "batch"} if backend.batch else {}),
        "splits": {},
    }
    totals: Counter[str] = Counter()
    for split, split_requests in requests.items():
        todo = [
            r
            for r in split_requests
            if not (isinstance(backend, CachingTeacher) and backend.store.has(backend.key(r)))
        ]
        prompt_tokens = sum(count_tokens(r.prompt, tokenizer) for r in todo)
        entry = {
            "requests": len(split_requests),
            "stored": len(split_requests) - len(todo),
            "to_ask": len(todo),
            "prompt_tokens": prompt_tokens,
            "completion_tokens_expected": typical * len(todo),
            "completion_tokens_max": ceiling * len(todo),
        }
        entry["cost_usd_expected"] = round(
            price_of(prompt_tokens, entry["completion_tokens_expected"], model, prices), 6
        )
        entry["cost_usd_max"] = round(
            price_of(prompt_tokens, entry["completion_tokens_max"], model, prices), 6
        )
        result["splits"][split] = entry
        totals.update({k: v for k, v in entry.items()})
    result["total"] = {k: round(v, 6) if isinstance(v, float) else v for k, v in totals.items()}
    return result
