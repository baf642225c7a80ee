"""Tokens and money: a price table, a running budget, and pre-run estimates.

Prices are US dollars per million tokens, prompt and completion apart, by model name.
The built-in table is a starting point that goes stale; pass your own YAML or JSON
file (``{model: {prompt: 0.15, completion: 0.60}}``) to ``load_prices``. A model
missing from the table costs 0 (a local server), and the summary says so.
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
        }
    return prices


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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    reserved: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)
    """Request id -> (prompt, completion) tokens held for a request in flight."""
    _hit: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, request: object, prompt_tokens: int, completion_tokens: int) -> bool:
        """Hold a request's most before it starts; False when spending it could pass a
        limit. With nothing else held that means the budget is spent (``stopped`` says
        so); otherwise the caller may wait for the requests in flight to settle."""
        with self._lock:
            held_prompt = sum(p for p, _ in self.reserved.values()) + prompt_tokens
            held_completion = sum(c for _, c in self.reserved.values()) + completion_tokens
            tokens = self.tokens + held_prompt + held_completion
            cost = price_of(
                self.prompt_tokens + held_prompt,
                self.completion_tokens + held_completion,
                self.model,
                self.prices,
            )
            over = (
                "tokens"
                if self.max_tokens is not None and tokens > self.max_tokens
                else "cost"
                if self.max_cost is not None and cost > self.max_cost
                else None
            )
            if over is not None:
                if not self.reserved:
                    self._hit = self._hit or over
                return False
            self.reserved[id(request)] = (prompt_tokens, completion_tokens)
            return True

    def add(self, usage: dict[str, int], request: object | None = None) -> None:
        with self._lock:
            self.reserved.pop(id(request), None)
            self.prompt_tokens += int(usage.get("prompt_tokens", 0) or 0)
            self.completion_tokens += int(usage.get("completion_tokens", 0) or 0)
            self.requests += 1

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return price_of(self.prompt_tokens, self.completion_tokens, self.model, self.prices)

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
