"""Tokens and money: a price table, a running budget, and pre-run estimates.

Prices are US dollars per million tokens, prompt and completion apart, by model name.
The built-in table is a starting point that goes stale; pass your own YAML or JSON
file (``{model: {prompt: 0.15, completion: 0.60}}``) to ``load_prices``. A model
missing from the table costs 0 (a local server), and the summary says so.

Requests sent through a batch API are priced by ``batch_prices``: an entry's own
``batch_prompt`` / ``batch_completion`` where it has them, else half the normal price
(OpenAI's Batch API discount).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .tasks import load_yaml

# USD per 1M tokens (list prices when written; check your provider's page).
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"prompt": 0.15, "completion": 0.60},
    "gpt-4o": {"prompt": 2.50, "completion": 10.00},
    "gpt-4.1-mini": {"prompt": 0.40, "completion": 1.60},
    "gpt-4.1-nano": {"prompt": 0.10, "completion": 0.40},
    "gpt-3.5-turbo-instruct": {"prompt": 1.50, "completion": 2.00},
}


def load_prices(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The built-in table, updated by a YAML / JSON file of the same shape."""
    prices = {model: dict(entry) for model, entry in DEFAULT_PRICES.items()}
    if path is None:
        return prices
    text = Path(path).read_text(encoding="utf-8")
    loaded = json.loads(text) if str(path).endswith(".json") else load_yaml(text)
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: a price table maps model names to {{prompt: X, completion: Y}}")
    for model, entry in loaded.items():
        if not isinstance(entry, dict) or not {"prompt", "completion"} <= set(entry):
            raise ValueError(
                f"{path}: price of {model!r} needs 'prompt' and 'completion' (USD per 1M tokens)"
            )
        prices[str(model)] = {
            "prompt": float(entry["prompt"]),
            "completion": float(entry["completion"]),
            **{k: float(entry[k]) for k in ("batch_prompt", "batch_completion") if k in entry},
        }
    return prices


BATCH_DISCOUNT = 0.5
"""A batch API request costs this share of the normal price, unless the table says."""


def batch_prices(prices: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """The table for requests sent through a batch API: each entry's ``batch_prompt`` /
    ``batch_completion``, else the normal price times ``BATCH_DISCOUNT``."""
    return {
        model: {
            "prompt": entry.get("batch_prompt", entry["prompt"] * BATCH_DISCOUNT),
            "completion": entry.get("batch_completion", entry["completion"] * BATCH_DISCOUNT),
        }
        for model, entry in prices.items()
    }


def price_of(
    prompt_tokens: int,
    completion_tokens: int,
    model: str | None,
    prices: dict[str, dict[str, float]],
) -> float:
    """USD for these tokens; 0 for a model the table does not know."""
    entry = prices.get(model or "")
    if entry is None:
        return 0.0
    return (prompt_tokens * entry["prompt"] + completion_tokens * entry["completion"]) / 1e6


def count_tokens(text: str, tokenizer: object | None = None) -> int:
    """A tokenizer's count, else ~4 characters a token (the usual English BPE rate)."""
    if tokenizer is not None:
        return len(tokenizer.encode(text))  # type: ignore[attr-defined]
    return max(1, (len(text) + 3) // 4)


@dataclass
class Budget:
    """Tokens and cost spent in this run, and the limits that stop it.

    A backend that runs requests concurrently ``reserve``s each request's most
    (its prompt and ``max_tokens``) before starting it and starts none that could pass
    a limit, so requests in flight are counted and the limits hold; ``add`` replaces
    the reservation with what the request actually used. The methods are thread-safe
    (a backend may reserve from its worker thread)."""

    model: str | None
    prices: dict[str, dict[str, float]]
    max_cost: float | None = None
    """Stop once this many USD are spent (new requests only; stored ones are free)."""
    max_tokens: int | None = None
    """Stop once this many tokens (prompt + completion) are spent."""
    live_prices: dict[str, dict[str, float]] | None = None
    """Prices of requests reserved with ``live=True`` when ``prices`` are batch prices (a
    batch run's failed rows retried on the normal API); None: ``prices`` for all."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    live_prompt_tokens: int = 0
    """The part of ``prompt_tokens`` priced at ``live_prices`` (with ``live_completion_tokens``)."""
    live_completion_tokens: int = 0
    requests: int = 0
    reserved: dict[int, tuple[int, int, bool]] = field(default_factory=dict, repr=False)
    """Request id -> (prompt, completion) tokens held for a request in flight, and
    whether it is priced at ``live_prices``."""
    _hit: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(
        self,
        request: object,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        live: bool = False,
        force: bool = False,
    ) -> bool:
        """Hold a request's most before it starts; False when spending it could pass a
        limit. With nothing else held that means the budget is spent (``stopped`` says
        so); otherwise the caller may wait for the requests in flight to settle.
        ``live``: priced at ``live_prices``. ``force``: held whatever the limits (a
        request already sent, e.g. in a batch that a killed run submitted)."""
        with self._lock:
            prompt, completion, live_prompt, live_completion = self._held()
            if live:
                live_prompt, live_completion = (
                    live_prompt + prompt_tokens,
                    live_completion + completion_tokens,
                )
            prompt, completion = prompt + prompt_tokens, completion + completion_tokens
            tokens = self.tokens + prompt + completion
            cost = self._cost(
                self.prompt_tokens + prompt,
                self.completion_tokens + completion,
                self.live_prompt_tokens + live_prompt,
                self.live_completion_tokens + live_completion,
            )
            over = (
                "tokens"
                if self.max_tokens is not None and tokens > self.max_tokens
                else "cost"
                if self.max_cost is not None and cost > self.max_cost
                else None
            )
            if over is not None and not force:
                if not self.reserved:
                    self._hit = self._hit or over
                return False
            self.reserved[id(request)] = (prompt_tokens, completion_tokens, live)
            return True

    def release(self, request: object) -> None:
        """Drop a request's hold without counting it (it was never billed)."""
        with self._lock:
            self.reserved.pop(id(request), None)

    def _held(self) -> tuple[int, int, int, int]:
        """Tokens held for requests in flight: (prompt, completion) in all and the live part."""
        held = list(self.reserved.values())
        return (
            sum(p for p, _, _ in held),
            sum(c for _, c, _ in held),
            sum(p for p, _, live in held if live),
            sum(c for _, c, live in held if live),
        )

    def add(self, usage: dict[str, int], request: object | None = None) -> None:
        with self._lock:
            _, _, live = self.reserved.pop(id(request), (0, 0, False))
            prompt = int(usage.get("prompt_tokens", 0) or 0)
            completion = int(usage.get("completion_tokens", 0) or 0)
            self.prompt_tokens += prompt
            self.completion_tokens += completion
            if live:
                self.live_prompt_tokens += prompt
                self.live_completion_tokens += completion
            self.requests += 1

    def _cost(self, prompt: int, completion: int, live_prompt: int, live_completion: int) -> float:
        if self.live_prices is None:
            return price_of(prompt, completion, self.model, self.prices)
        return price_of(
            prompt - live_prompt, completion - live_completion, self.model, self.prices
        ) + price_of(live_prompt, live_completion, self.model, self.live_prices)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return self._cost(
            self.prompt_tokens,
            self.completion_tokens,
            self.live_prompt_tokens,
            self.live_completion_tokens,
        )

    @property
    def stopped(self) -> str | None:
        """Why the run stopped, with the totals as they are now (requests that were in
        flight at the stop are counted once they are added)."""
        if self._hit == "cost":
            return f"cost budget reached: ${self.cost:.4f} spent of ${self.max_cost:.4f}"
        if self._hit == "tokens":
            return f"token budget reached: {self.tokens} tokens spent of {self.max_tokens}"
        return None

    def exhausted(self) -> bool:
        """True (and says why in ``stopped``) once a limit is reached."""
        if self.max_cost is not None and self.cost >= self.max_cost:
            self._hit = self._hit or "cost"
        elif self.max_tokens is not None and self.tokens >= self.max_tokens:
            self._hit = self._hit or "tokens"
        return self._hit is not None

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost, 6),
            "priced": (self.model or "") in self.prices,
            **({"stopped": self.stopped} if self.stopped else {}),
        }
