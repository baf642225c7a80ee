"""A server's limits, batching and key: one dataclass, the CLI's serve flags' defaults."""

from __future__ import annotations

from dataclasses import dataclass

API_KEY_ENV = "STEPDISTILL_API_KEY"


@dataclass
class ServeSettings:
    """Limits and batching of one server."""

    api_key: str | None = None
    """Bearer token required on every route but /health; ``None`` leaves the API open."""
    model_name: str | None = None
    """Name reported by /v1/models and in responses (default: the run folder's name)."""
    max_body_bytes: int = 1_000_000
    """Larger request bodies are refused with 413 before they are parsed."""
    max_inputs: int = 64
    """Inputs (or prompts) per request."""
    max_input_chars: int = 20_000
    """Characters per formatted input, prompt or chat."""
    max_tokens: int = 512
    """Upper bound on ``max_tokens`` in OpenAI requests."""
    dynamic_batching: bool = True
    """Run concurrent requests together; off: one model call per request."""
    batch_wait_ms: float = 5.0
    """How long the worker waits for more requests before a model call."""
    max_batch_items: int = 64
    """Inputs per model call when batching."""
    max_queue: int = 1024
    """Requests waiting beyond this get 503."""
    max_queue_inputs: int = 8192
    """Inputs waiting (over all requests) beyond this get 503."""
    max_queue_chars: int = 32_000_000
    """Characters of input waiting (over all requests) beyond this get 503."""
    request_timeout_s: float = 120.0
    """A request not answered within this many seconds gets 504; if it is still waiting
    for the model it is dropped unrun (as is the request of a client that disconnects)."""
    header_timeout_s: float = 10.0
    """A connection that has not sent a complete request head this long after it opened
    (or after its last response) is closed: idle sockets cannot pile up."""
    body_timeout_s: float = 30.0
    """A request body not received within this many seconds gets 408."""
    keep_alive_s: float = 5.0
    """Idle keep-alive connections are closed after this many seconds."""
    max_connections: int = 1000
    """Connections and requests at once; beyond it uvicorn answers 503 (capped below the
    process's file-descriptor limit)."""
    shutdown_timeout_s: float = 5.0
    """On SIGTERM, requests still running after this many seconds are cancelled."""
    allow_public_without_key: bool = False
    """Serve on a non-loopback address without an API key (refused otherwise)."""
