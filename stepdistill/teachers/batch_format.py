"""The OpenAI Batch API's file formats: request ids, and the lines of an output file.

A batch is a JSONL file of requests, each with a ``custom_id``; its results come back in
another JSONL file, in any order, one line per request::

    {"id": "batch_req_1", "custom_id": "svamp-train-12-0",
     "response": {"status_code": 200, "body": {... a chat or text completion ...}},
     "error": null}

and the requests that failed in an error file of the same shape (``response`` null or a
non-200 ``status_code``, ``error`` an object). Results are joined to rows by
``custom_id`` only, never by position.

Our ``custom_id`` is ``{task}-{split}-{row}-{sample}`` (``DEFAULT_CUSTOM_ID``): the task's
name, the split of the file the row was read from, the row's index in that file and the
sample index, so it is the same on every run. Replaying someone else's output file takes
their pattern: a template over the same fields (``q{row}``, ``{split}/{row}``) or a
regular expression with a named group ``row`` (and optionally ``split``, ``sample``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError

DEFAULT_CUSTOM_ID = "{task}-{split}-{row}-{sample}"
FIELDS = {"task": r".+?", "split": r"[^\s/:-]+", "row": r"\d+", "sample": r"\d+"}
"""The fields a custom_id template may use, and what each matches when parsed back (a
split name holds no ``-``, so ``svamp-llama3-train-12-0`` reads as task ``svamp-llama3``)."""
TERMINAL = ("completed", "failed", "expired", "cancelled")
"""Batch statuses after which nothing more happens."""


def custom_id(template: str, task: str, split: str, row: int, sample: int) -> str:
    """The id of one request: ``template`` filled in."""
    return template.format(task=task, split=split, row=row, sample=sample)


class CustomIdPattern:
    """Parses a custom_id back into (split, row, sample): a template with ``{row}``, or a
    regular expression with ``(?P<row>...)``."""

    def __init__(self, pattern: str):
        self.text = pattern
        if "(?P<row>" in pattern:
            try:
                self.regex = re.compile(pattern)
            except re.error as error:
                raise DataError(
                    f"custom_id pattern {pattern!r}: not a valid regex: {error}"
                ) from None
            return
        names = re.findall(r"{([^{}]*)}", pattern)
        unknown = sorted(set(names) - set(FIELDS))
        if unknown or "row" not in names:
            what = f"unknown field(s) {{{'}, {'.join(unknown)}}}" if unknown else "no {row}"
            raise DataError(
                f"custom_id pattern {pattern!r}: {what}; a template uses {{task}}, {{split}}, "
                "{row} (required) and {sample}, e.g. '{split}-{row}'; a regex names a group "
                "(?P<row>\\d+)"
            )
        parts = re.split(r"({[^{}]*})", pattern)
        seen: set[str] = set()
        regex = ""
        for part in parts:
            name = part[1:-1] if part.startswith("{") and part.endswith("}") else None
            if name is None:
                regex += re.escape(part)
            elif name in seen:
                regex += f"(?P={name})"
            else:
                seen.add(name)
                regex += f"(?P<{name}>{FIELDS[name]})"
        self.regex = re.compile(regex)

    def parse(self, value: str) -> tuple[str | None, int, int] | None:
        """(split or None when the pattern has none, row, sample) or None: no match."""
        match = self.regex.fullmatch(value)
        if match is None:
            return None
        groups = match.groupdict()
        try:
            row = int(groups["row"])
            sample = int(groups.get("sample") or 0)
        except (TypeError, ValueError):
            return None
        return groups.get("split"), row, sample


@dataclass
class BatchResult:
    """One line of a batch output (or error) file."""

    custom_id: str
    text: str | None
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    line: int = 0


def result_of(record: dict[str, Any], line: int = 0) -> BatchResult:
    """What one output line says: the continuation and its usage, or why there is none
    (an ``error`` object, a null ``response``, a non-200 ``status_code``, no text)."""
    cid = str(record.get("custom_id"))
    error = record.get("error")
    response = record.get("response")
    if error:
        if isinstance(error, dict):
            code = error.get("code") or error.get("type") or "error"
            message = " ".join(str(error.get("message") or "").split())[:200]
            reason = f"{code}: {message}" if message else str(code)
        else:
            reason = " ".join(str(error).split())[:200]
        return BatchResult(cid, None, f"batch failed: {reason}", line=line)
    if not isinstance(response, dict):
        return BatchResult(cid, None, "batch failed: no response", line=line)
    status = response.get("status_code")
    body = response.get("body")
    if status != 200:
        message = ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = " ".join(str(body["error"].get("message") or "").split())[:200]
        return BatchResult(
            cid,
            None,
            f"batch failed: status {status}{f': {message}' if message else ''}",
            line=line,
        )
    text = completion_text(body)
    if text is None:
        return BatchResult(cid, None, "batch failed: no completion text in the response", line=line)
    usage: dict[str, int] = {}
    reported = body.get("usage") if isinstance(body, dict) else None
    if isinstance(reported, dict) and isinstance(reported.get("prompt_tokens"), int):
        usage = {
            "prompt_tokens": int(reported["prompt_tokens"]),
            "completion_tokens": int(reported.get("completion_tokens") or 0),
        }
    return BatchResult(cid, text, usage=usage, line=line)


def completion_text(body: Any) -> str | None:
    """The text of a chat completion (``choices[0].message.content``) or a text
    completion (``choices[0].text``); None when it has neither."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    return text if isinstance(text, str) else None


def parse_lines(
    text: str, where: str | Path, unreadable: list[int] | None = None
) -> list[BatchResult]:
    """Every line of an output or error file. A line that is not a JSON object with a
    ``custom_id`` is an error naming the file and the line - or, given ``unreadable``,
    its number is added there and the line skipped (its request then has no result)."""
    results = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            problem = None
        except json.JSONDecodeError as error:
            record, problem = None, f"is not JSON ({error.msg})"
        if problem is None and (not isinstance(record, dict) or "custom_id" not in record):
            problem = "has no custom_id"
        if problem is not None:
            if unreadable is None:
                raise DataError(f"{where}:{number}: batch output line {problem}: {line[:60]!r}")
            unreadable.append(number)
            continue
        assert isinstance(record, dict)
        results.append(result_of(record, number))
    return results


def looks_like_batch_output(text: str) -> bool:
    """True when the first non-empty line is a JSON object with ``custom_id`` and
    ``response`` (or ``error``): a Batch API output file."""
    for line in text.splitlines():
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return False
            return (
                isinstance(record, dict)
                and "custom_id" in record
                and ("response" in record or "error" in record)
            )
    return False
