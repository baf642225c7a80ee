"""A small, safe arithmetic evaluator for SVAMP equations.

Only numbers, + - * / (and the symbols × ÷ −), unary minus and parentheses are
accepted. The expression is tokenised and parsed by hand (recursive descent), so
no Python code is ever executed: ``eval`` and ``ast`` evaluation are never used.
Length and nesting are bounded so hostile input costs bounded time and memory.
Arithmetic is exact (fractions), so ``1 / (0.3 - 0.1 - 0.2)`` is a division by zero,
not a huge number from rounding; the value is returned as a float.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

MAX_LENGTH = 512
MAX_DEPTH = 64

# ASCII digits only: \d would also take other scripts' digits (and float() reads them).
_TOKEN = re.compile(r"\s*(?:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)|(.))", re.DOTALL)
_SYMBOLS = {"×": "*", "÷": "/", "−": "-", "x": "*"}


class ArithmeticError_(ValueError):
    """Raised for anything that is not a plain arithmetic expression."""


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    for match in _TOKEN.finditer(text):
        number, other = match.groups()
        if number is not None:
            tokens.append(number)
        elif other is not None:
            other = _SYMBOLS.get(other, other)
            if other not in "+-*/()":
                raise ArithmeticError_(f"unexpected character {other!r}")
            tokens.append(other)
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.position = 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ArithmeticError_("unexpected end of expression")
        self.position += 1
        return token

    # expression := term (('+'|'-') term)*
    def expression(self, depth: int) -> Fraction:
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            operator = self.take()
            right = self.term(depth)
            value = value + right if operator == "+" else value - right
        return value

    # term := factor (('*'|'/') factor)*
    def term(self, depth: int) -> Fraction:
        value = self.factor(depth)
        while self.peek() in ("*", "/"):
            operator = self.take()
            right = self.factor(depth)
            if operator == "*":
                value = value * right
            else:
                if right == 0:
                    raise ArithmeticError_("division by zero")
                value = value / right
        return value

    # factor := number | '-' factor | '+' factor | '(' expression ')'
    def factor(self, depth: int) -> Fraction:
        if depth > MAX_DEPTH:
            raise ArithmeticError_("expression nested too deeply")
        token = self.take()
        if token == "-":
            return -self.factor(depth + 1)
        if token == "+":
            return self.factor(depth + 1)
        if token == "(":
            value = self.expression(depth + 1)
            if self.take() != ")":
                raise ArithmeticError_("missing closing parenthesis")
            return value
        if token in "*/)":
            raise ArithmeticError_(f"unexpected {token!r}")
        return Fraction(token)


def evaluate(text: str) -> float:
    """Return the value of an arithmetic expression, or raise ``ValueError``."""
    if len(text) > MAX_LENGTH:
        raise ArithmeticError_(f"expression longer than {MAX_LENGTH} characters")
    tokens = _tokenize(text)
    if not tokens:
        raise ArithmeticError_("empty expression")
    parser = _Parser(tokens)
    value = parser.expression(0)
    if parser.peek() is not None:
        raise ArithmeticError_(f"unexpected {parser.peek()!r} after the expression")
    try:
        return float(value)
    except OverflowError:
        raise ArithmeticError_("value is too large for a float") from None


def safe_value(text: str | None) -> float | None:
    """The expression's value, or ``None`` when it is not valid arithmetic."""
    if text is None:
        return None
    try:
        return evaluate(text)
    except (ValueError, OverflowError, RecursionError):
        return None


def same_value(predicted: str | None, gold: str | None, tolerance: float = 1e-4) -> bool:
    """True when both expressions are valid and their values agree."""
    a, b = safe_value(predicted), safe_value(gold)
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
