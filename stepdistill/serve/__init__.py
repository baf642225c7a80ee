"""Serve a student over HTTP: a task endpoint and an OpenAI-compatible API.

Routes (FastAPI + uvicorn):

- ``POST /v1/predict``  ``{"inputs": [...], "rationale": false}`` -> labels (and rationales);
- ``POST /v1/completions``, ``POST /v1/chat/completions`` (OpenAI-compatible, with SSE
  streaming). For a stepdistill run the prompt (or the last user message) is the task
  input and the answer is the student's label, so an app that asked an LLM can switch
  to the student by changing ``base_url``. For a plain HF model folder they are greedy
  continuations (chat through the tokenizer's chat template);
- ``GET /health`` (never needs the key), ``GET /v1/models``.

Concurrent requests share model calls through ``batching.Batcher`` (``jobs.py``). Decoding is greedy
whatever ``temperature`` says, and streaming sends the answer in pieces once it is
generated (the student's answers are short; one batched call serves many streams).
Any model name is accepted in requests: the server has one model.

The package, by part: ``settings`` (ServeSettings), ``app`` (the app, handlers, task
routes), ``openai_api`` (the OpenAI-compatible routes and streaming), ``jobs`` and
``batching`` (the way to the model), ``guard`` (key, body limits, uvicorn's connection
limits), ``errors``, ``server`` (``serve``: load and run). It imports FastAPI at the top:
it is the server backend, imported only by ``stepdistill serve`` and the tests. torch is
loaded when the model is.
"""

from __future__ import annotations

from .app import PredictRequest, create_app
from .batching import Batcher, Expired, QueueFull, ShuttingDown
from .errors import ApiError, describe_validation, error_response, is_valid_text
from .guard import LOOPBACK, Guard, head_timeout_protocol, uvicorn_config
from .openai_api import (
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    check_stop,
    cut_at_stop,
    include_usage,
    make_usage,
    pieces,
)
from .server import serve
from .settings import API_KEY_ENV, ServeSettings

__all__ = [
    "API_KEY_ENV",
    "LOOPBACK",
    "ApiError",
    "Batcher",
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "Expired",
    "Guard",
    "PredictRequest",
    "QueueFull",
    "ServeSettings",
    "ShuttingDown",
    "check_stop",
    "create_app",
    "cut_at_stop",
    "describe_validation",
    "error_response",
    "head_timeout_protocol",
    "include_usage",
    "is_valid_text",
    "make_usage",
    "pieces",
    "serve",
    "uvicorn_config",
]
