"""Errors answered as OpenAI-style JSON, and the one-line text of a request's problems."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class ApiError(Exception):
    """An error answered as OpenAI-style JSON: ``{"error": {"message", "type", ...}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_response(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def describe_validation(errors: Any) -> str:
    """One readable sentence from pydantic's error list (at most four problems)."""
    problems: dict[str, list[str]] = {}
    for error in errors:
        kind, loc = error.get("type"), [str(x) for x in error.get("loc", ())]
        if kind == "json_invalid":
            return f"request body is not valid JSON: {error.get('ctx', {}).get('error', error.get('msg'))}"
        if loc == ["body"]:
            return (
                "request body is empty; send a JSON object"
                if kind == "missing"
                else "request body must be a JSON object"
            )
        # A union's errors carry the member type as the last part ('inputs.0.str'): fold them.
        if loc and (loc[-1] in _TYPE_TAGS or "[" in loc[-1]):
            loc = loc[:-1]
        where = ".".join(loc[1:] if loc[:1] == ["body"] else loc)
        if kind in ("missing", "extra_forbidden"):
            message = f"{'missing' if kind == 'missing' else 'unknown'} field '{where}'"
            where = message  # its own entry, never joined with "or"
        else:
            message = (
                f"'{where}': {error.get('msg', '')}"
                if not problems.get(where)
                else str(error.get("msg", ""))
            )
        if message not in problems.setdefault(where, []):
            problems[where].append(message)
    parts = [" or ".join(messages) for messages in problems.values()][:4]  # "or": a union's members
    return "invalid request: " + "; ".join(parts)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def is_valid_text(text: str) -> bool:
    """False for text with a lone surrogate ("\\ud800" is valid JSON but not Unicode
    text): the tokenizer fails on it, so it is refused with 400 before batching."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
